"""Many workers on one study, in real processes, on a real PostgreSQL server and on the journal file: the total
is reached exactly with no model trained twice, the same command started twice is safe, a worker killed with
kill -9 has its trial retried, the storage going away is retried then reported in one line, and no password is
ever printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.record import TrialRecord, count_primaries, records
from tests.pgserver import PASSWORD, PostgresServer, bin_dir

FAST = ["study=quick", "progress=false", "storage.heartbeat_interval=1", "storage.grace_period=4",
        "storage.claim_delay_s=0.5"]
SLOW = ["train.finetune.steps=80", "train.finetune_when=always"]  # trials of a few seconds (every model fine-tuned),
# so that a worker can be killed mid-trial


@pytest.fixture(scope="module")
def pg():
    if bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries on this machine (apt-get install postgresql)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The quick study's data and baseline, made once for every test here."""
    studies = tmp_path_factory.mktemp("warm") / "studies"
    p = subprocess.run([sys.executable, "-m", "search", *FAST, f"studies_dir={studies}", "study.n_trials=1"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return studies / "cache"


class Backend:
    def __init__(self, kind: str, tmp: Path, pg: PostgresServer | None) -> None:
        self.kind, self.tmp, self.pg = kind, tmp, pg
        if kind == "journal":
            self.url = str(tmp / "quick.log")
        else:
            self.db = f"t{uuid.uuid4().hex[:10]}"
            self.url = pg.create_db(self.db)

    def args(self) -> list[str]:
        return [f"storage={self.kind}", f"storage.url={self.url}"]

    def study(self) -> optuna.Study:
        if self.kind == "journal":
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage = JournalStorage(JournalFileBackend(self.url))
        else:
            storage = optuna.storages.RDBStorage(self.url)
        return optuna.load_study(study_name="quick", storage=storage)


@pytest.fixture(params=["journal", "postgres"])
def backend(request, tmp_path) -> Backend:
    pg = request.getfixturevalue("pg") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, pg)


def studies_dir(tmp: Path, cache: Path) -> Path:
    studies = tmp / "studies"
    studies.mkdir(exist_ok=True)
    if not (studies / "cache").exists():
        (studies / "cache").symlink_to(cache)
    return studies


def start(studies: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search", *FAST, f"studies_dir={studies}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # independent processes on 2 cores: one thread each (as workers=N does itself)
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def finish(p: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


def check_study(study: optuna.Study, n_trials: int, combos: int = 4) -> list[TrialRecord]:
    """Exactly n_trials counted primaries, no model trained twice, every (model, radio, codec) once."""
    assert count_primaries(study) == n_trials
    done = records(study, (TrialState.COMPLETE,))
    prim = [r for r in done if r.is_primary]
    assert len(prim) == n_trials
    assert max(Counter(r.accuracy_key for r in prim).values()) == 1  # no model trained twice
    assert max(Counter((r.accuracy_key, r.radio, r.codec) for r in done).values()) == 1
    assert len(done) == n_trials * combos  # each model on every radio x codec, siblings added once
    return done


def test_n_workers_reach_exactly_n_trials_and_train_each_model_once(backend, cache, tmp_path):
    """Three workers on six trials (two each if shared evenly; a two-worker variant added ~25 s to the suite and
    nothing three do not exercise)."""
    studies = studies_dir(tmp_path, cache)
    out = finish(start(studies, *backend.args(), "workers=3", "study.n_trials=6"))
    check_study(backend.study(), 6)
    assert (studies / "quick" / "pareto.csv").is_file() and "feasible Pareto points" in out
    assert not list((studies / "quick").glob(".*"))  # no temporary export file left behind
    if backend.kind == "postgres":
        assert PASSWORD not in out


def test_the_same_command_twice_is_safe(backend, cache, tmp_path):
    """Two terminals, one study: both exit 0, no trial of either is failed, the total is reached once."""
    studies = studies_dir(tmp_path, cache)
    a = start(studies, *backend.args(), "study.n_trials=5", *SLOW)
    time.sleep(3)
    b = start(studies, *backend.args(), "study.n_trials=5", *SLOW)
    finish(a), finish(b)
    study = backend.study()
    check_study(study, 5)
    assert not study.get_trials(states=(TrialState.FAIL,))


def test_kill_9_of_one_of_three_workers_retries_its_trial(backend, cache, tmp_path):
    studies = studies_dir(tmp_path, cache)
    procs = [start(studies, *backend.args(), "study.n_trials=5", *SLOW) for _ in range(3)]
    victim, killed_trial = None, None
    deadline = time.time() + 240
    while victim is None and time.time() < deadline:
        time.sleep(0.3)
        try:
            running = [TrialRecord.from_trial(t) for t in backend.study().get_trials(states=(TrialState.RUNNING,))]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        for r in running:
            pid = int(r.worker.rsplit(":", 1)[1]) if r.worker and r.training else None
            for p in procs:
                if p.pid == pid and p.poll() is None:
                    victim, killed_trial = p, r.number
                    os.kill(p.pid, signal.SIGKILL)
                    break
            if victim:
                break
    assert victim is not None, "never saw a worker training a model"
    victim.wait(timeout=30)
    for p in procs:
        if p is not victim:
            finish(p)
    study = backend.study()
    n = 5
    dead = TrialRecord.from_trial(study.trials[killed_trial])
    assert dead.state == TrialState.FAIL and dead.interrupted and not dead.counts
    retries = [t for t in study.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               == killed_trial]
    assert retries and retries[0].params == study.trials[killed_trial].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)  # run by a live worker (or a duplicate)
    check_study(study, n)


def test_dashboard_serializes_a_postgres_study_with_feasibility(pg, cache, tmp_path):
    from optuna_dashboard._serializer import serialize_frozen_trial

    b = Backend("postgres", tmp_path, pg)
    finish(start(studies_dir(tmp_path, cache), *b.args(), "study.n_trials=2"))
    storage = optuna.storages.RDBStorage(b.url)  # what `optuna-dashboard postgresql://...` opens
    sid = storage.get_study_id_from_name("quick")
    trials = storage.get_all_trials(sid, states=(TrialState.COMPLETE,))
    assert len(trials) == 2 * 4
    for t in trials:
        s = serialize_frozen_trial(sid, t, storage.get_study_system_attrs(sid))
        assert s["constraints"] == [t.constraints["map50_drop"], t.constraints["platform"]]
        assert {a["key"]: a["value"] for a in s["user_attrs"]}["feasible"] in ("True", "False")


def test_wrong_password_is_one_line_and_never_printed(pg, tmp_path):
    url = pg.url("postgres", password="wrong-pw-123")
    p = subprocess.run([sys.executable, "-m", "search", *FAST, f"studies_dir={tmp_path}", "storage=postgres",
                        f"storage.url={url}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: storage postgresql://postgres:***@127.0.0.1")
    assert "wrong-pw-123" not in p.stdout + p.stderr and "Traceback" not in p.stderr


def test_storage_going_away_is_retried_then_one_line(pg, cache, tmp_path):
    """The server stops mid-run: the worker retries with back-off; back within storage.retry_minutes the study
    completes; gone for longer, the worker exits 2 with one line that names no password."""
    b = Backend("postgres", tmp_path, pg)
    studies = studies_dir(tmp_path, cache)
    p = start(studies, *b.args(), "study.n_trials=4", *SLOW, "storage.retry_minutes=1")
    try:
        _wait_for_primaries(b, 1)
        pg.stop("immediate")
        time.sleep(10)  # longer than any storage-free stretch of a trial, so the worker meets the outage
        pg.resume()
        out = finish(p)
    finally:
        if pg.bin and not _up(pg):
            pg.resume()
    assert "unreachable" in out and "retrying" in out and PASSWORD not in out
    check_study(b.study(), 4)

    p = start(studies, *b.args(), "study.n_trials=8", *SLOW, "storage.retry_minutes=0.05")
    try:
        _wait_for_primaries(b, 5)
        pg.stop("immediate")
        out, _ = p.communicate(timeout=120)
    finally:
        pg.resume()
    assert p.returncode == 2, out[-2000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "unreachable for storage.retry_minutes=0.05; giving up" in errors[0]
    assert PASSWORD not in out and "Traceback" not in out
    assert all(len(ln) < 400 for ln in out.splitlines())  # a heartbeat thread's error is one line too


def _wait_for_primaries(b: Backend, n: int, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if count_primaries(b.study()) >= n:
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.5)


def _up(pg: PostgresServer) -> bool:
    try:
        import psycopg

        psycopg.connect(pg.url(), connect_timeout=2).close()
        return True
    except Exception:  # noqa: BLE001
        return False
