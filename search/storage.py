"""Study storage: SQLite (default), a journal file, or PostgreSQL. Passwords are never printed."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from search.config import StorageConfig
from search.profiles import ConfigError


def masked(url: str) -> str:
    """The URL with any password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands: print nothing of it
        return "<unparsable storage URL>"


def make_storage(cfg: StorageConfig, study: str, studies_dir: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """Open the storage; returns it and a printable description (for ``optuna-dashboard``)."""
    studies_dir.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "sqlite":
        url = cfg.url or f"sqlite:///{studies_dir / f'{study}.db'}"
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}), url
    if cfg.kind == "journal":
        path = Path(cfg.url) if cfg.url else studies_dir / f"{study}.log"
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    url = cfg.url or os.environ.get(cfg.url_env)
    if not url:
        raise ConfigError(f"storage.url is missing: set storage.url or the environment variable {cfg.url_env}")
    if not url.startswith(("postgresql", "postgres")):
        raise ConfigError(f"storage.url={masked(url)!r} must be a postgresql:// URL")
    try:
        return RDBStorage(url), masked(url)
    except ImportError as e:
        raise ConfigError(f"storage=postgres needs a PostgreSQL driver ({e.name}); "
                          "pip install psycopg2-binary") from None
    except Exception as e:  # noqa: BLE001 - connection errors carry the URL: print only its masked form
        raise ConfigError(f"storage.url={masked(url)}: cannot connect ({type(e).__name__})") from None
