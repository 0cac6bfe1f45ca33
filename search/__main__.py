"""`python -m search study=energy_latency`: the Hydra entry point, and the one place that turns an expected error
(bad configuration, bad data, an unavailable device, an unreadable or unreachable study database) into one line
and exit 2. An unexpected error prints its traceback with any storage password masked, and exits 1 (Hydra's
own error line, which would print the overrides and so a password on the command line, never runs). Only this
file knows Hydra's runtime."""

from __future__ import annotations

import os
import sys
import threading
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
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


def secrets(cfg: DictConfig) -> list[str]:
    """Passwords of the storage URL (from the config or its environment variable), to mask in any output."""
    from search.storage import password_of

    storage = cfg.get("storage") or {}
    urls = (storage.get("url"), os.environ.get(str(storage.get("url_env") or "")))
    return [pw for pw in (password_of(str(u)) if u else None for u in urls) if pw]


def masked(text: str, hidden: list[str]) -> str:
    for s in hidden:
        text = text.replace(s, "***")
    return text


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from search.run import run

    hidden = secrets(cfg)

    def thread_error(args: threading.ExceptHookArgs) -> None:
        # e.g. Optuna's heartbeat thread while the storage is unreachable: one line (the run retries or reports)
        print(f"warning: thread {args.thread.name if args.thread else '?'}: "
              f"{masked(one_line(args.exc_value) or args.exc_type.__name__, hidden)[:300]}", file=sys.stderr)

    threading.excepthook = thread_error
    try:
        run(cfg, overrides=list(HydraConfig.get().overrides.task))
    except (*EXPECTED, OmegaConfBaseException) as e:
        print(f"error: {masked(one_line(e), hidden)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a bug: its traceback, with the password masked
        print(masked(traceback.format_exc(), hidden), file=sys.stderr, end="")
        sys.exit(1)


if __name__ == "__main__":
    main()
