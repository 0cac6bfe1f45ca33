"""Riding out a storage outage: retry with back-off while the study's database is unreachable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import optuna

from search.config import RunConfig
from search.profiles import ConfigError

T = TypeVar("T")


def _in_chain(e: BaseException | None, match) -> BaseException | None:
    # Optuna's _run_trial can turn a failed storage call into an UnboundLocalError: follow the chain
    seen = set()
    while e is not None and id(e) not in seen:
        if match(e):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def storage_error(e: BaseException) -> BaseException | None:
    """The storage error behind ``e`` (SQLAlchemy's DBAPIError, Optuna's StorageInternalError), if any."""
    from sqlalchemy.exc import DBAPIError

    return _in_chain(e, lambda x: isinstance(x, (DBAPIError, optuna.exceptions.StorageInternalError)))


def finished_elsewhere(e: BaseException) -> bool:
    """This worker's trial was finished by another worker (its heartbeat went stale meanwhile)."""
    return _in_chain(e, lambda x: isinstance(x, optuna.exceptions.UpdateFinishedTrialError) or (
        isinstance(x, ValueError) and str(x).startswith("Cannot tell a"))) is not None


def with_storage_retries(rc: RunConfig, url: str, fn: Callable[[], T],
                         after_outage: Callable[[], object] | None = None) -> T:
    """Call ``fn``; while the storage is unreachable, retry with back-off (1, 2, 4 ... 30 s) for
    ``storage.retry_minutes``, then give up with one line (the trial that was running is failed by its stale
    heartbeat and queued again by the next worker). ``after_outage`` runs first when the storage is back."""
    deadline, wait = None, 1.0
    while True:
        try:
            if deadline is not None and after_outage is not None:
                after_outage()
            return fn()
        except Exception as err:  # noqa: BLE001 - re-raised unless the storage is behind it
            if finished_elsewhere(err):
                print("this worker's trial was failed by another worker (its heartbeat went stale) and queued "
                      "again; going on", flush=True)
                continue
            e = storage_error(err)
            if e is None:
                raise
            now = time.time()
            deadline = deadline or now + rc.storage.retry_minutes * 60
            if now >= deadline:
                raise ConfigError(f"storage {url}: unreachable for storage.retry_minutes={rc.storage.retry_minutes}; "
                                  f"giving up ({type(e).__name__})") from None
            print(f"storage {url} unreachable ({type(e).__name__}); retrying in {wait:.0f} s", flush=True)
            time.sleep(min(wait, max(0.0, deadline - now)))
            wait = min(wait * 2, 30.0)
