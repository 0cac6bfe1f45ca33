"""`python -m search study=energy_latency`: the Hydra entry point, and the one place that turns an expected error
(bad configuration, bad data, an unavailable device, an unreadable study database) into one line and exit 2.
Only this file knows Hydra's runtime."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from objectives.data.real import DataError
from objectives.device import DeviceError
from search.profiles import ConfigError

EXPECTED = (ConfigError, DataError, DeviceError)


def one_line(e: BaseException) -> str:
    if isinstance(e, OmegaConfBaseException):  # e.g. a mandatory value (???) left unset
        return f"{getattr(e, 'full_key', '')}: {' '.join(str(e).splitlines()[0].split())}"
    return " ".join(str(e).split())


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from search.run import run

    try:
        run(cfg)
    except (*EXPECTED, OmegaConfBaseException) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
