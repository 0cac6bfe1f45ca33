"""The trial loop in process, with a stubbed accuracy evaluator (no training): siblings, duplicates, failures,
recovery of interrupted trials, stop conditions and resume. Seconds in all; the subprocess tests in
test_study.py run the same code with the real evaluator."""

from __future__ import annotations

import math
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from models import TinyYOLOv3Config, cut_points
from objectives.design import DesignPoint
from objectives.fit import TrainingDiverged
from objectives.objective import AccuracyResult
from search import drivers, record
from search import study as lifecycle
from search.objective import Objective, Pricing, score
from search.profiles import load_profile
from search.record import TrialRecord
from search.space import suggest
from tests.helpers import accuracy_result, conf

TABLE = cut_points(TinyYOLOv3Config(num_classes=1, input_size=160))
BASE_MAP = 0.9


def fake_accuracy(point: DesignPoint) -> AccuracyResult:
    """Deterministic numbers that depend on every accuracy-relevant axis (no training)."""
    p = TABLE[point.j]
    kept = max(1, round(p.channels * point.cut_keep)) if p.is_split else p.channels
    values = kept * p.height * p.width if p.is_split else 0
    raw = math.ceil(values * point.bits / 8) if p.is_split else (3 * 160 * 160 if point.j == 0 else 120)
    m = 0.9 - (0.02 * (8 - point.bits) + 0.3 * (1 - point.cut_keep) if p.is_split else 0.0)
    return accuracy_result(
        point.accuracy_key(TABLE), point.j, m, {"none": raw + 24.0, "zlib": raw / 2 + 24.0},
        node_macs=p.node_macs, edge_macs=p.edge_macs, cut_shape=[kept, p.height, p.width], feature_values=values,
        raw_bytes=raw, payload_max_bytes={"none": raw + 24, "zlib": raw // 2 + 24}, entropy_bytes=raw / 3,
        weight_count=1000, peak_activation_values=1000)


class Counting:
    def __init__(self, fail_at_j: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at_j = fail_at_j

    def __call__(self, point: DesignPoint) -> AccuracyResult:
        self.calls.append(point.accuracy_key(TABLE))
        if point.j == self.fail_at_j:
            raise TrainingDiverged(f"finetune j={point.j}: loss is nan at step 3 of 40")
        return fake_accuracy(point)


def setup(*overrides: str, evaluate=None, storage=None, seed: int = 0):
    rc = conf("study=quick", f"study.seed={seed}", *overrides)
    study = optuna.create_study(directions=["minimize", "minimize"], storage=storage, study_name="t",
                                sampler=lifecycle.make_sampler(rc), load_if_exists=True)
    pricing = Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in rc.space.radios},
                      {n: load_profile("codec", n) for n in rc.space.codecs}, rc.study.th, BASE_MAP)
    ev = evaluate or Counting()
    return rc, study, Objective(study, rc.space, TABLE, pricing, ev, ("none", "zlib")), ev


def by_role(study):
    recs = record.records(study, (TrialState.COMPLETE,))
    return [r for r in recs if r.is_primary], [r for r in recs if not r.is_primary]


def test_siblings_price_every_radio_and_codec_once_per_model():
    rc, study, obj, ev = setup("study.n_trials=5")
    done = drivers.sampler_loop(rc, study, obj)
    prim, sib = by_role(study)
    assert done == 5 == len(prim) == record.count_primaries(study)
    combos = len(rc.space.radios) * len(rc.space.codecs)
    assert len(sib) == 5 * (combos - 1)
    assert sorted(ev.calls) == sorted({r.accuracy_key for r in prim})  # one evaluation per model
    for p in prim:
        family = [p, *(s for s in sib if s.parent == p.number)]
        assert {(r.radio, r.codec) for r in family} == {(r, c) for r in rc.space.radios for c in rc.space.codecs}
        for s in family:
            assert s.accuracy_key == p.accuracy_key and s.accuracy == p.accuracy
            t = study.trials[s.number]
            want = score(p.accuracy, s.radio, s.codec, obj.pricing)
            assert tuple(t.values) == want.values and {k: t.constraints[k] for k in want.constraints} == want.constraints
            assert s.feasible == (p.accuracy.map50 >= BASE_MAP - rc.study.th)


def test_an_entropy_codec_where_no_feature_map_crosses_is_the_none_option():
    """ans / ans_ctx code feature maps only: at j=0 and where detections cross, a model gets one trial per radio for
    the three codecs (they are one option), at a split one per codec; a proposal of the other two is a duplicate."""
    def entropy_payloads(point):  # as payload_stats: an entropy codec sends the image as none
        a = fake_accuracy(point)
        split = a.feature_values > 0
        mean = {**a.payload_mean_bytes, "ans": a.payload_mean_bytes["none"] * (0.7 if split else 1.0),
                "ans_ctx": a.payload_mean_bytes["none"] * (0.6 if split else 1.0)}
        return replace(a, payload_mean_bytes=mean, payload_max_bytes={k: math.ceil(v) for k, v in mean.items()})

    rc, study, obj, ev = setup("space.partitions=[0,3]", "space.image_codecs=[raw]", "space.radios=[ble5]",
                               "space.codecs=[none,ans,ans_ctx]", "study.n_trials=2", "study.max_duplicates=50",
                               evaluate=entropy_payloads)
    study.enqueue_trial({"j": 0, "image_codec": "raw", "codec": "ans", "radio": "ble5"})  # the image, "ans"
    study.enqueue_trial({"j": 0, "image_codec": "raw", "codec": "none", "radio": "ble5"})  # the same option again
    drivers.sampler_loop(rc, study, obj)
    prim, sib = by_role(study)
    family = {p.accuracy_key: [p, *(s for s in sib if s.parent == p.number)] for p in prim}
    assert "j=0" in family and len(family) == 2
    assert len(family["j=0"]) == 1  # none, ans and ans_ctx at j=0: one option, one trial
    split = next(v for k, v in family.items() if k != "j=0")
    assert sorted(r.codec for r in split) == ["ans", "ans_ctx", "none"]
    assert obj.option("ans_ctx", split=False) == "none" == obj.option("none", split=False)
    assert obj.option("ans_ctx", split=True) == "ans_ctx" and obj.option("zlib", split=False) == "zlib"
    dups = [TrialRecord.from_trial(t) for t in study.get_trials(states=(TrialState.PRUNED,))]
    assert dups and dups[0].number == 1 and dups[0].duplicate_of == 0  # none at j=0: the "ans" trial's option
    assert family["j=0"][0].codec == "ans" and family["j=0"][0].payload_bytes == math.ceil(
        family["j=0"][0].accuracy.payload_mean_bytes["none"])


def test_duplicate_proposals_are_pruned_not_counted_and_stop_the_loop(capsys):
    rc, study, obj, ev = setup("space.partitions=[0]", "space.image_codecs=[raw]", "space.radios=[ble5]",
                               "space.codecs=[none]", "study.n_trials=5", "study.max_duplicates=3")
    assert drivers.sampler_loop(rc, study, obj) == 1
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    first = by_role(study)[0][0]
    assert len(pruned) == 3 and all(TrialRecord.from_trial(t).duplicate_of == first.number for t in pruned)
    assert ev.calls == ["j=0"]
    assert "3 already-evaluated points in a row" in capsys.readouterr().out


def test_a_failed_trial_counts_and_the_study_goes_on(capsys):
    rc, study, obj, ev = setup("space.partitions=[0,3]", "study.n_trials=4", evaluate=Counting(fail_at_j=3))
    drivers.sampler_loop(rc, study, obj)
    failed = [TrialRecord.from_trial(t) for t in study.get_trials(states=(TrialState.FAIL,))]
    assert failed and all("loss is nan" in r.fail_reason and not r.interrupted and r.counts for r in failed)
    assert record.count_primaries(study) == 4 == len(failed) + len(by_role(study)[0])
    assert "failed: finetune j=3: loss is nan" in capsys.readouterr().out


def test_n_trials_is_the_study_total_and_resume_reuses_measured_models():
    rc, study, obj, ev = setup("study.n_trials=3")
    drivers.sampler_loop(rc, study, obj)
    n_before = len(study.trials)
    assert drivers.sampler_loop(rc, study, obj) == 3 and len(study.trials) == n_before  # nothing more to do
    keys = {r.accuracy_key for r in by_role(study)[0]}
    rc4 = replace(rc, study=replace(rc.study, n_trials=4))
    again = Objective(study, rc.space, TABLE, obj.pricing, Counting(), ("none", "zlib"))  # a resumed run
    assert set(again.cache) == keys  # the measured models are known without evaluating them again
    assert drivers.sampler_loop(rc4, study, again) == 4
    assert all(k not in keys for k in again.evaluate.calls)


def test_a_model_kept_unfinetuned_is_measured_again_under_a_stricter_threshold():
    """train.finetune_when=needed: a stored model that skipped fine-tuning for meeting th=0.5 answers a resumed run
    only while it still meets that run's constraint; fine-tuned models answer any."""
    def evaluate(point):  # as evaluate_accuracy does: a model that meets baseline - th is not fine-tuned
        acc = fake_accuracy(point)
        return replace(acc, finetune_skipped=acc.map50 >= BASE_MAP - 0.5 and TABLE[point.j].is_split and point.j > 2)

    rc, study, obj, _ = setup("study.n_trials=12", evaluate=evaluate)
    drivers.sampler_loop(rc, study, obj)
    accs = {r.accuracy_key: r.accuracy for r in by_role(study)[0]}
    skipped = {k for k, a in accs.items() if a.finetune_skipped}
    cut = sorted(accs[k].map50 for k in skipped)[len(skipped) // 2]  # a stricter requirement: the median's mAP
    lower = {k for k in skipped if accs[k].map50 < cut}
    assert lower and skipped - lower and set(accs) - skipped  # every kind is there (seed 0)
    same = Objective(study, rc.space, TABLE, obj.pricing, Counting(), ("none", "zlib"))
    assert set(same.cache) == set(accs)
    strict = Objective(study, rc.space, TABLE, replace(obj.pricing, th=BASE_MAP - cut), Counting(), ("none", "zlib"))
    assert set(strict.cache) == set(accs) - lower
    point = next(suggest(optuna.trial.FixedTrial(t.params), rc.space, TABLE) for t in study.trials
                 if t.user_attrs.get("accuracy_key") in lower)
    assert strict.accuracy(point).finetune_skipped is False and strict.evaluate.calls == [point.accuracy_key(TABLE)]


def test_timeout_stops_after_the_running_trial(capsys):
    rc, study, obj, _ = setup("study.n_trials=10", "study.timeout_min=1e-9")
    assert drivers.sampler_loop(rc, study, obj) == 1
    assert "study.timeout_min=1e-09 reached; re-run to continue" in capsys.readouterr().out


def _running_trial(study, rc, params):
    """A RUNNING trial with ``params``, as a worker that died mid-trial leaves it."""
    from search.space import distributions_of

    study.enqueue_trial(params)
    t = study.ask(fixed_distributions=distributions_of(params, rc.space, TABLE))
    assert t.params == params
    return t


PARAMS = {"j": 3, "bits": 2, "keep_cut": 0.5, "keep_L0": 1.0, "keep_L2": 1.0, "codec": "zlib", "radio": "wifi"}


def test_single_worker_recovery_retries_the_interrupted_point(tmp_path):
    rc, study, obj, ev = setup("study.n_trials=2", storage=f"sqlite:///{tmp_path / 's.db'}")
    orphan = _running_trial(study, rc, PARAMS)
    assert lifecycle.recover(study, single_worker=True) == 1
    r = TrialRecord.from_trial(study.trials[orphan.number])
    assert r.state == TrialState.FAIL and r.interrupted and not r.counts
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [PARAMS]
    assert drivers.sampler_loop(rc, study, obj) == 2
    prim = by_role(study)[0]
    assert prim[0].number == waiting[0].number and study.trials[prim[0].number].params == PARAMS  # run first
    assert lifecycle.recover(study, single_worker=True) == 0


def test_recovery_without_single_worker_never_touches_a_live_workers_trial(tmp_path):
    rc, study, _, _ = setup(storage=f"sqlite:///{tmp_path / 's.db'}")
    live = _running_trial(study, rc, PARAMS)
    assert lifecycle.recover(study, single_worker=False) == 0
    assert study.trials[live.number].state == TrialState.RUNNING


@pytest.mark.parametrize("protocol_overrides", [["study=paper", "study.name=t", "study.paper_channels=[1,4]",
                                                 "study.paper_ratios=[0.5]", "space.partitions=[0,2,3,6]"]])
def test_paper_protocol_grid_runs_each_point_once(protocol_overrides):
    rc = conf(*protocol_overrides, "study.th=0.6")
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=lifecycle.make_sampler(rc))
    pricing = Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in rc.space.radios},
                      {n: load_profile("codec", n) for n in rc.space.codecs}, rc.study.th, BASE_MAP)
    ev = Counting()
    obj = Objective(study, rc.space, TABLE, pricing, ev, ("zlib",))
    drivers.paper_protocol(rc, study, obj, TABLE, BASE_MAP)
    prim = by_role(study)[0]
    # step 1: j=0 (the raw image, JPEG and WebP at the 3 anchor qualities), j=6, unpruned j=2 and j=3, and 1 and 4
    # channels at each: 7 + 1 + 2 + 4; step 2: 1 ratio at j=2, 3
    assert len(prim) == 16 and len(ev.calls) == len(set(ev.calls)) == 16
    assert sum(r.accuracy.key.startswith("j=0;img=") for r in prim) == 6
    step2 = [r for r in prim if any(k.startswith("keep_L") and v < 1 for k, v in study.trials[r.number].params.items())]
    assert {r.accuracy.j for r in step2} == {2, 3}
    drivers.paper_protocol(rc, study, obj, TABLE, BASE_MAP)  # resumable: nothing runs twice
    assert len(by_role(study)[0]) == 16


# ---------------------------------------------------------------------------------------------- shared studies
def shared_objective(study, rc, evaluate=None, n_trials=None, liveness=None):
    from search.objective import Shared
    from search.workers import Claims

    pricing = Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in rc.space.radios},
                      {n: load_profile("codec", n) for n in rc.space.codecs}, rc.study.th, BASE_MAP)
    return Objective(study, rc.space, TABLE, pricing, evaluate or Counting(), ("none", "zlib"),
                     Shared(Claims(0.0), liveness, n_trials))


def test_a_model_another_worker_is_training_is_not_trained_again():
    from search.workers import Claims

    rc = conf("study=quick")
    study = optuna.create_study(directions=["minimize", "minimize"])
    other = _running_trial(study, rc, PARAMS)  # worker A drew PARAMS and won the claim on its model
    key = DesignPoint(3, 2, 0.5, ((0, 1.0), (2, 1.0)), "l1", "zlib", "wifi").accuracy_key(TABLE)
    assert Claims(0.0).claim(study, other, key) is None and TrialRecord.from_trial(study.trials[0]).training
    ev = Counting()
    obj = shared_objective(study, rc, ev)  # worker B draws the same model on another radio
    study.enqueue_trial({**PARAMS, "radio": "ble5"})
    study.optimize(obj, n_trials=1)
    mine = TrialRecord.from_trial(study.trials[-1])
    assert mine.state == TrialState.PRUNED and mine.duplicate_of == other.number and ev.calls == []
    # two claims on one model that neither has decided yet: the lower trial number trains it
    t1, t2 = _running_trial(study, rc, {**PARAMS, "bits": 1}), _running_trial(study, rc, {**PARAMS, "bits": 1})
    key1 = DesignPoint(3, 1, 0.5, ((0, 1.0), (2, 1.0)), "l1", "zlib", "wifi").accuracy_key(TABLE)
    record.write(t1, TrialRecord(accuracy_key=key1))
    assert Claims(0.0).claim(study, t2, key1) == t1.number  # t2 sees t1's claim and defers
    assert Claims(0.0).claim(study, t1, key1) is None  # t1 is the first claimant: it trains


def test_a_trial_beyond_the_total_is_skipped_not_run():
    rc = conf("study=quick")
    study = optuna.create_study(directions=["minimize", "minimize"])
    running = _running_trial(study, rc, PARAMS)  # another worker's trial, the study's last one
    ev = Counting()
    study.optimize(shared_objective(study, rc, ev, n_trials=1), n_trials=1)
    r = TrialRecord.from_trial(study.trials[-1])
    assert r.state == TrialState.PRUNED and "n_trials" in r.skipped and not ev.calls
    assert study.trials[running.number].state == TrialState.RUNNING


def test_journal_heartbeat_attr_reaps_only_stale_trials(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from search.workers import AttrHeartbeat

    rc = conf("study=quick")
    study = optuna.create_study(directions=["minimize", "minimize"],
                                storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    live = AttrHeartbeat(interval_s=0.05, grace_s=0.5)
    dead, alive = _running_trial(study, rc, PARAMS), _running_trial(study, rc, {**PARAMS, "bits": 1})
    record.write(dead, TrialRecord(heartbeat=0.0, training=True))  # its worker stopped beating long ago
    with live.beating(alive):
        import time

        time.sleep(0.6)
        assert live.reap(study) == 1
    assert study.trials[dead.number].state == TrialState.FAIL
    assert study.trials[alive.number].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == PARAMS and optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert TrialRecord.from_trial(retry).training is None  # the copy does not inherit the dead run's claim


def test_a_worker_whose_trial_was_failed_elsewhere_goes_on(capsys):
    """Another worker judged this worker's trial stale and failed it: the worker's own tell must not crash it."""
    from search.retry import with_storage_retries

    rc = conf("study=quick", "study.n_trials=3")
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=lifecycle.make_sampler(rc))
    failed_once = []

    def evaluate(point):
        if not failed_once:
            (mine,) = study.get_trials(states=(TrialState.RUNNING,))
            study.tell(mine.number, state=TrialState.FAIL)  # what a reaping worker does
            failed_once.append(mine.number)
        return fake_accuracy(point)

    obj = shared_objective(study, rc, evaluate, n_trials=3)
    done = with_storage_retries(rc, "mem", lambda: drivers.sampler_loop(rc, study, obj))
    assert done == 3 == record.count_primaries(study)
    assert study.trials[failed_once[0]].state == TrialState.FAIL
    assert "failed by another worker" in capsys.readouterr().out


def test_running_trials_without_heartbeat_are_not_waited_for_forever():
    """A RUNNING trial that never got a heartbeat is never stale to Optuna: the stop callback's wait is bounded."""
    rc = conf("study=quick")
    study = optuna.create_study(directions=["minimize", "minimize"])
    ghost = _running_trial(study, rc, PARAMS)
    stop = drivers.StopWhen(n_trials=1, timeout_min=0, max_duplicates=10, reap=lambda s: None, poll_s=0.01,
                            orphaned_after_s=0.05)
    done_trial = study.ask()
    study.tell(done_trial, state=TrialState.PRUNED)
    stop(study, study.trials[done_trial.number])
    assert study.trials[ghost.number].state == TrialState.FAIL
    assert [t.params for t in study.get_trials(states=(TrialState.WAITING,))] == [PARAMS]
    assert not stop.reason  # the retry is there to run: this worker goes on


def test_startup_adds_missing_siblings_of_a_dead_local_worker_only():
    import subprocess
    import sys

    from search.space import distributions_of
    from search.workers import worker_id

    rc = conf("study=quick")
    study = optuna.create_study(directions=["minimize", "minimize"])
    obj = shared_objective(study, rc)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = worker_id().rsplit(":", 1)[0]
    for bits, who in ((1, f"{host}:{gone.stdout.strip()}"), (2, "another-host:1")):
        params = {**PARAMS, "bits": bits}
        point = DesignPoint(3, bits, 0.5, ((0, 1.0), (2, 1.0)), "l1", "zlib", "wifi")
        s = score(fake_accuracy(point), "wifi", "zlib", obj.pricing, worker=who)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions_of(params, rc.space, TABLE),
                                                  values=list(s.values), user_attrs=s.record.to_attrs()))
    added = lifecycle.complete_siblings(study, obj, min_age_s=3600)  # both completed just now
    assert added == 3  # the 2 x 2 radio x codec of the dead local worker's model, not the live remote one's
    sib = [r for r in record.records(study) if not r.is_primary]
    assert {r.parent for r in sib} == {0}
