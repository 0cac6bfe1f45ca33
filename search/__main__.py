"""`python -m search study=energy_latency`: the Hydra entry point. Only this file knows Hydra's runtime."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from objectives.data.real import DataError
from search.profiles import ConfigError


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from search.run import run

    try:
        run(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OmegaConfBaseException as e:  # e.g. a mandatory value (???) left unset
        key = getattr(e, "full_key", "")
        print(f"error: {key}: {' '.join(str(e).splitlines()[0].split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
