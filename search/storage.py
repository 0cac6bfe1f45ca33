"""Study storage: SQLite (default), a journal file, or PostgreSQL. Passwords are never printed.

With ``storage.heartbeat_interval > 0`` (SQLite, PostgreSQL) every running trial records a heartbeat; a
trial whose worker died is failed after ``grace_period`` by the next ``study.optimize`` of any worker and
queued again by Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from search.config import StorageConfig
from search.profiles import ConfigError
from search.record import TrialRecord


class Requeue(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback, queuing a copy of the failed trial without the attrs of its run (a stale
    heartbeat or claim); one retry path for stale (heartbeat) and interrupted (single worker) trials."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = TrialRecord.from_trial(trial).for_retry()
        super().__call__(study, trial)


def masked(url: str) -> str:
    """The URL with any password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands: print nothing of it
        return "<unparsable storage URL>"


def password_of(url: str) -> str | None:
    """The password in a database URL (None: none, or not a URL), to mask it wherever text may carry it."""
    from sqlalchemy.engine import make_url

    try:
        pw = make_url(url).password
    except Exception:  # noqa: BLE001 - not a URL: nothing to mask in it
        return None
    return str(pw) if pw else None


def _rdb(url: str, cfg: StorageConfig, shown: str, **engine_kwargs) -> RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    beat = {}
    if cfg.heartbeat_interval:
        beat = {"heartbeat_interval": cfg.heartbeat_interval, "grace_period": cfg.grace_period,
                "heartbeat_stale_trial_callback": Requeue()}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs or None, **beat)
    except ImportError as e:
        driver = f" ({e.name})" if e.name else ""
        raise ConfigError(f"storage={cfg.kind}: the database driver{driver} is not installed; for PostgreSQL: "
                          "pip install 'psycopg[binary]' (SQLAlchemy maps postgresql:// to psycopg 3; a "
                          "postgresql+psycopg2:// URL uses psycopg2)") from None
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as e:
        # connection and corrupt-file errors carry the URL: print only its masked form and the error's first line
        first = " ".join(str(getattr(e, "orig", None) or e).splitlines()[0].split())[:160] if str(e) else ""
        secret = password_of(url)
        if secret:
            first = first.replace(secret, "***")
        raise ConfigError(f"storage {shown}: cannot open the study database ({type(e).__name__}: {first})") from None


def make_storage(cfg: StorageConfig, study: str, studies_dir: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """Open the storage; returns it and a printable description (for ``optuna-dashboard``)."""
    studies_dir.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "sqlite":
        url = cfg.url or f"sqlite:///{studies_dir / f'{study}.db'}"
        return _rdb(url, cfg, url, connect_args={"timeout": 60}), url
    if cfg.kind == "journal":
        path = Path(cfg.url) if cfg.url else studies_dir / f"{study}.log"
        # a worker killed while it held the file lock leaves it behind: it is broken after the grace period
        lock = JournalFileSymlinkLock(str(path), grace_period=max(1, cfg.grace_period) if cfg.grace_period else 30)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock)), str(path)
    url = cfg.url or os.environ.get(cfg.url_env)
    if not url:
        raise ConfigError(f"storage.url is missing: set storage.url or the environment variable {cfg.url_env}")
    if not url.startswith(("postgresql", "postgres")):
        raise ConfigError(f"storage.url={masked(url)!r} must be a postgresql:// URL")
    return _rdb(url, cfg, masked(url)), masked(url)
