"""Many workers on one study.

Any number of processes - this command started again, here or on other machines with the same ``storage``, or
``workers=N`` local processes started by one command - share one study:

- *Claims* (:class:`Claims`): a worker writes the accuracy key it drew on its trial, waits ``claim_delay_s``
  and reads the study back; of the workers that drew the same model only one trains it (the one that already
  declared ``training``, else the lowest trial number), the others prune their trial as a duplicate. The wait is
  what makes it safe without a lock: of two claims, the later one's read comes after the earlier one's decision
  was written (README "Scaling out" has the argument). The sampler avoids collisions in the first place
  (``constant_liar``).
- *Liveness*: a worker that dies leaves its trial RUNNING. Storages with Optuna heartbeats (SQLite, PostgreSQL)
  fail it after ``grace_period`` and queue it again (:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`);
  the journal storage has none, so :class:`AttrHeartbeat` writes a heartbeat user attr from a thread and reaps
  stale trials with the same callback.
- *The total*: a trial that starts when the counted primaries plus the earlier running ones already make
  ``study.n_trials`` is pruned (``skipped``), so the study ends at the total, beyond it only by trials that were
  running when it was reached.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import optuna
from optuna.trial import TrialState

from search import record
from search.record import TrialRecord
from search.storage import Requeue

WORKER_ENV = "SPLITCNN_WORKER"  # set in the processes started by workers=N (the parent exports at the end)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def maybe_alive(worker: str | None) -> bool:
    """False only for a worker of this host whose process is gone; another host's (or an unknown) may live."""
    if not worker or ":" not in worker:
        return True
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False  # this process is starting: nothing of it runs yet
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Fail a RUNNING trial (``study.tell``) and queue its point again; a no-op if another worker was first."""
    try:
        study.tell(t.number, state=TrialState.FAIL)
    except (ValueError, RuntimeError):  # finished meanwhile (by its worker, or reaped by another one)
        return
    if t.params:
        Requeue()(study, t)  # it copies the trial's point, not its state


def reap_stale(study: optuna.Study, liveness: AttrHeartbeat | None) -> int:
    """Fail and re-queue the trials of dead workers: by ``liveness`` where the storage has no heartbeats of its
    own (journal), else by Optuna's heartbeats (a no-op where they are off). Returns how many."""
    if liveness is not None:
        return liveness.reap(study)
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    optuna.storages.fail_stale_trials(study)
    return running - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


class AttrHeartbeat:
    """Heartbeats as a trial user attr, for storages without Optuna's (the journal file)."""

    def __init__(self, interval_s: float, grace_s: float) -> None:
        self.interval_s, self.grace_s = interval_s, grace_s

    @contextlib.contextmanager
    def beating(self, trial: optuna.Trial) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.interval_s):
                with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                    record.write(trial, TrialRecord(heartbeat=time.time()))

        record.write(trial, TrialRecord(heartbeat=time.time()))
        thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial.number}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def reap(self, study: optuna.Study) -> int:
        """Fail and re-queue the RUNNING trials whose last heartbeat is older than the grace period."""
        now, n = time.time(), 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            r = TrialRecord.from_trial(t)
            last = r.heartbeat if r.heartbeat is not None else (t.datetime_start.timestamp() if t.datetime_start
                                                                 else now)
            if now - last > self.grace_s:
                retry(study, t)
                n += 1
        return n


class Claims:
    """Which worker trains a model that several workers drew at once (see the module docstring)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def claim(self, study: optuna.Study, trial: optuna.Trial, key: str) -> int | None:
        """Claim ``key`` for ``trial``. Returns None when this trial trains it, else the number of the trial that
        holds (or is training) the model."""
        record.write(trial, TrialRecord(accuracy_key=key, worker=worker_id()))

        def others_now() -> list[TrialRecord]:
            return [r for r in record.records(study, (TrialState.RUNNING, TrialState.COMPLETE))
                    if r.number != trial.number]

        busy = others_now()
        if self.delay_s and any(r.state == TrialState.RUNNING for r in busy):
            # another trial is running: wait for its claim to become visible, then read again. Alone, this claim is
            # decided now, and any later claimant reads that decision after its own wait.
            time.sleep(self.delay_s)
            busy = others_now()
        others = [r for r in busy if r.accuracy_key == key]
        done = [r.number for r in others if r.state == TrialState.COMPLETE]
        if done:
            return min(done)
        training = [r.number for r in others if r.training]
        if training:
            return min(training)
        first = min([trial.number, *(r.number for r in others)])
        if first != trial.number:
            return first
        record.write(trial, TrialRecord(training=True))
        return None


def surplus(recs: list[TrialRecord], trial_number: int, n_trials: int) -> bool:
    """Whether the study's total is already made by counted primaries and the earlier running trials (``recs``:
    the study's complete, failed and running trials)."""
    done = sum(r.counts for r in recs)
    running = sum(1 for r in recs if r.state == TrialState.RUNNING and r.number < trial_number and r.is_primary)
    return done + running >= n_trials


def launch(overrides: list[str], n: int, url_env: str | None = None, url: str | None = None) -> list[int]:
    """Start ``n`` processes of this command with ``workers=1`` and wait for them; returns their exit codes.

    With several GPUs each worker sees one (``CUDA_VISIBLE_DEVICES``); otherwise each gets an even share of the
    CPU cores (``OMP_NUM_THREADS``). A PostgreSQL URL reaches them through the environment, not the command
    line (which ``ps`` shows to every user).
    """
    import torch

    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // n)
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("workers", "progress", "storage.url")]
    procs = []
    for i in range(n):
        env = {**os.environ, WORKER_ENV: str(i), "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        extra = []
        if url and url_env:
            env[url_env] = url
            extra = ["storage.url=null"]
        elif url:
            extra = [f"storage.url={url}"]
        cmd = [sys.executable, "-m", "search", *keep, *extra, "workers=1", "progress=false"]
        procs.append(subprocess.Popen(cmd, env=env))
    return [p.wait() for p in procs]
