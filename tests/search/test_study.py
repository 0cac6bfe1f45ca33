"""The quick study end to end, in subprocesses: database, exports, costs, resume, kill -9, export mode,
the dashboard's view of constraints, journal storage."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from objectives.objective import evaluate_costs
from search.profiles import load_profile
from search.record import StudyRecord, TrialRecord

QUICK = ["study=quick", "progress=false"]


def cli(studies: Path, *extra: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "search", *QUICK, f"studies_dir={studies}", *extra],
                       capture_output=True, text=True, timeout=timeout, cwd=studies.parent, env=env)
    assert p.returncode == 0 or not check, p.stdout[-2000:] + p.stderr[-3000:]
    return p


def load(studies: Path, name: str = "quick") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{studies / (name + '.db')}")


def rec(t) -> TrialRecord:
    return TrialRecord.from_trial(t)


def primaries(study: optuna.Study, states=(TrialState.COMPLETE,)):
    return [t for t in study.get_trials(states=states) if rec(t).is_primary]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    studies = tmp_path_factory.mktemp("q") / "studies"
    t = time.time()
    p = cli(studies)
    return studies, p, time.time() - t


def test_quick_study_end_to_end(quick_run):
    studies, p, seconds = quick_run
    assert (studies / "quick.db").is_file()
    for f in ("pareto.csv", "pareto.json", "trials.csv", "pareto.html"):
        assert (studies / "quick" / f).is_file(), f
    study = load(studies)
    prim = primaries(study)
    assert len(prim) == 3
    assert study.metric_names == ["node_energy_mJ", "latency_ms"]
    sib = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if not rec(t).is_primary]
    assert len(sib) == 3 * (2 * 2 - 1)  # every model for every radio x codec (2 x 2 in study=quick)
    combos = {(rec(t).radio, rec(t).codec) for t in sib + prim if rec(t).parent == prim[0].number}
    assert combos == {(r, c) for r in ("ble5", "wifi") for c in ("none", "zlib")}
    for t in prim + sib:
        r = rec(t)
        assert r.mAP50 >= 0 and r.energy and r.latency and r.accuracy is not None
        assert set(t.constraints) >= {"map50_drop", "platform"}
    assert "baseline mAP@0.5" in p.stdout and "feasible Pareto points" in p.stdout


def test_pareto_rows_match_cost_models(quick_run):
    studies, _, _ = quick_run
    study = load(studies)
    pareto = pd.read_csv(studies / "quick" / "pareto.csv")
    assert len(pareto) >= 1
    by_number = {t.number: t for t in study.get_trials()}
    node, edge = load_profile("node", "cortex_m7"), load_profile("edge", "rtx3090")
    for _, row in pareto.iterrows():
        t = by_number[int(row["trial"])]
        cost = evaluate_costs(rec(t).accuracy, node, edge, load_profile("radio", row["radio"]), load_profile("codec", row["codec"]))
        assert row["node_energy_mJ"] == pytest.approx(cost.node_energy_mj, rel=1e-9)
        assert row["latency_ms"] == pytest.approx(cost.latency_ms, rel=1e-9)
        assert bool(row["feasible"])
    # Pareto: no row dominates another
    e, lat = pareto["node_energy_mJ"].to_numpy(), pareto["latency_ms"].to_numpy()
    for i in range(len(pareto)):
        dom = (e <= e[i]) & (lat <= lat[i]) & ((e < e[i]) | (lat < lat[i]))
        assert not dom.any()


def test_dashboard_sees_constraints_and_feasibility(quick_run):
    from optuna_dashboard._serializer import serialize_frozen_trial

    studies, _, _ = quick_run
    storage = optuna.storages.RDBStorage(f"sqlite:///{studies / 'quick.db'}")  # what the dashboard opens
    study_id = storage.get_study_id_from_name("quick")
    sysattrs = storage.get_study_system_attrs(study_id)
    for t in storage.get_all_trials(study_id, states=(TrialState.COMPLETE,)):
        s = serialize_frozen_trial(study_id, t, sysattrs)
        assert s["constraints"] == [t.constraints["map50_drop"], t.constraints["platform"]]
        attrs = {a["key"]: a["value"] for a in s["user_attrs"]}
        assert attrs["feasible"] in ("True", "False") and "mAP50" in attrs


@pytest.mark.slow
def test_resume_keeps_trials_and_counts_total(quick_run, tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(quick_run[0], studies)
    before = {t.number: t.values for t in load(studies).get_trials()}
    p = cli(studies)
    study = load(studies)
    assert {t.number: t.values for t in study.get_trials()} == before  # n_trials is the study's total
    assert "cached" in p.stdout  # dataset and baseline caches reused
    p = cli(studies, "study.n_trials=4")
    assert "settings differ" not in p.stdout + p.stderr
    study = load(studies)
    assert len(primaries(study)) == 4
    assert all(study.trials[n].values == v for n, v in before.items())
    p = cli(studies, "study.n_trials=4", "train.finetune.lr=0.002")  # a recipe change is not silent
    assert "settings differ from those this study's trials were measured with" in p.stdout + p.stderr


def test_export_mode_rebuilds_without_training(quick_run, tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(quick_run[0], studies)
    shutil.rmtree(studies / "quick")
    shutil.rmtree(studies / "cache")
    p = cli(studies, "mode=export")
    assert (studies / "quick" / "pareto.csv").is_file() and (studies / "quick" / "pareto.html").is_file()
    assert not (studies / "cache").exists()  # nothing was generated or trained
    assert "feasible Pareto points" in p.stdout


@pytest.mark.slow
def test_kill_9_mid_trial_then_resume(tmp_path):
    studies = tmp_path / "studies"
    # every model fine-tuned for 150 steps, so a trial runs long enough to be killed; the exclusive owner
    slow = ["train.finetune.steps=150", "train.finetune_when=always", "study.n_trials=3", "study.single_worker=true"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "search", *QUICK, f"studies_dir={studies}", *slow],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    deadline = time.time() + 300
    killed_during = None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not (studies / "quick.db").is_file():
                continue
            try:
                study = load(studies)
                done = primaries(study)
                running = study.get_trials(states=(TrialState.RUNNING,))
            except Exception:  # noqa: BLE001 - the database may be mid-creation
                continue
            if done and running:
                killed_during = running[0].number
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert killed_during is not None, "never saw a running trial after a completed one"
    study = load(studies)
    completed_before = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert study.trials[killed_during].state == TrialState.RUNNING  # what kill -9 leaves behind
    p = cli(studies, *slow)
    assert "interrupted trial(s) failed and queued again" in p.stdout
    study = load(studies)
    assert len(primaries(study)) == 3
    for n, v in completed_before.items():
        assert study.trials[n].values == v  # no completed trial lost
    assert study.trials[killed_during].state == TrialState.FAIL
    assert rec(study.trials[killed_during]).interrupted
    # the retry carries the parameters the interrupted trial had (a kill while the sampler was still suggesting
    # leaves some unset; the retry's sampler fills those)
    killed_params = study.trials[killed_during].params
    retried = [t for t in primaries(study) if t.number > killed_during and t.params.items() >= killed_params.items()]
    assert retried, ("the interrupted point was evaluated again", killed_params, [t.params for t in primaries(study)])


def test_journal_storage(tmp_path):
    studies = tmp_path / "studies"
    cli(studies, "storage=journal", "study.n_trials=2")
    assert (studies / "quick.log").is_file()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="quick", storage=JournalStorage(JournalFileBackend(str(studies / "quick.log"))))
    assert len(primaries(study)) == 2 and not math.isnan(StudyRecord.of(study).baseline_mAP50)


def test_diverging_finetune_fails_that_trial_and_the_study_goes_on(tmp_path):
    studies = tmp_path / "studies"
    p = cli(studies, "train.finetune.lr=1e30", "train.finetune_when=always", "study.n_trials=3", "study.enqueue_baselines=true",
            "space.partitions=[0,3]")
    study = load(studies)
    failed = primaries(study, (TrialState.FAIL,))
    complete = primaries(study)
    assert failed and all("loss is" in rec(t).fail_reason for t in failed)
    assert complete and all(t.params["j"] == 0 for t in complete)  # j=0 is not fine-tuned and completes
    assert len(failed) + len(complete) == 3
    assert "feasible Pareto points" in p.stdout


def test_duplicates_are_pruned_not_counted(tmp_path):
    """In a space of a single model, re-proposals are pruned (not counted) and the loop stops by itself."""
    studies = tmp_path / "studies"
    p = cli(studies, "space.partitions=[0]", "space.image_codecs=[raw]", "space.radios=[ble5]", "space.codecs=[none]",
            "study.n_trials=5", "study.max_duplicates=3")
    study = load(studies)
    assert len(primaries(study)) == 1
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) == 3 and all(rec(t).duplicate_of == primaries(study)[0].number for t in pruned)
    assert "already-evaluated points in a row" in p.stdout
