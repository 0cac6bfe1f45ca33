"""Drivers: what decides the next design point. The sampler loop (``protocol=search``) and the paper's manual
protocol as an enqueued grid (``protocol=paper``); both run ``study.optimize`` with the objective's callback and
a stop callback, and count model evaluations the same way (:func:`search.record.count_primaries`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from models.cut_points import CutTable
from objectives.design import DesignPoint, PointFailed
from objectives.objective import constraint_value
from search import record, workers
from search import study as lifecycle
from search.config import RunConfig
from search.objective import Objective
from search.record import TrialRecord
from search.space import baseline_points, params_of, point_of


class StopWhen:
    """``study.optimize`` callback that calls ``study.stop()`` (like Optuna's ``MaxTrialsCallback``) when the
    study holds ``n_trials`` counted primaries (with other workers: counted plus running, which those workers
    finish), when ``timeout_min`` has passed, or after ``max_duplicates`` duplicate proposals in a row;
    :attr:`reason` says which, for the run's summary."""

    def __init__(self, n_trials: int, timeout_min: float, max_duplicates: int, bar: tqdm | None = None,
                 reap: Callable[[optuna.Study], object] | None = None, poll_s: float = 2.0,
                 orphaned_after_s: float = 180.0) -> None:
        self.n_trials, self.timeout_min, self.max_duplicates, self.bar = n_trials, timeout_min, max_duplicates, bar
        self.reap, self.poll_s, self.orphaned_after_s = reap, poll_s, orphaned_after_s
        self.t0 = time.time()
        self.duplicates = 0
        self.done = 0
        self.reason = ""

    def _progress(self, study: optuna.Study) -> tuple[int, int, int]:
        recs = record.records(study, (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING))
        done = sum(r.counts for r in recs)
        running = sum(1 for r in recs if r.state == TrialState.RUNNING and r.is_primary)
        waiting = sum(1 for r in recs if r.state == TrialState.WAITING)
        return done, running, waiting

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done, running, waiting = self._progress(study)
        # other workers' trials make the total: wait for them, or for one to go stale and come back as a retry
        since, seen = time.time(), None
        while self.reap is not None and running and not waiting and self.done < self.n_trials <= self.done + running:
            time.sleep(self.poll_s)
            self.reap(study)
            now_running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            if now_running != seen:
                since, seen = time.time(), now_running
            elif time.time() - since > self.orphaned_after_s:
                # RUNNING without a single heartbeat (a worker that died, or lost the storage, between creating
                # its trial and its first beat): Optuna never calls those stale
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    workers.retry(study, t)
                tqdm.write(f"trials {sorted(now_running)} made no progress for {self.orphaned_after_s:.0f} s: "
                           "failed and queued again")
            self.done, running, waiting = self._progress(study)
        if self.bar is not None:
            self.bar.n = min(self.done, self.n_trials)
            self.bar.refresh()
        skipped = TrialRecord.from_trial(trial).skipped
        self.duplicates = self.duplicates + 1 if trial.state == TrialState.PRUNED and not skipped else 0
        if self.done + running >= self.n_trials or skipped:
            self.reason = "done"
        elif self.duplicates >= self.max_duplicates:
            self.reason = (f"the sampler proposed {self.duplicates} already-evaluated points in a row: the study has "
                           f"converged on this space (widen it, relax study.th, or fine-tune longer); stopping at "
                           f"{self.done} of {self.n_trials} evaluations")
        elif self.timeout_min and time.time() - self.t0 > self.timeout_min * 60:
            self.reason = f"study.timeout_min={self.timeout_min} reached; re-run to continue"
        if self.reason:
            study.stop()


def _optimize(study: optuna.Study, objective: Objective, stop: Callable[[optuna.Study, optuna.trial.FrozenTrial],
                                                                       None]) -> None:
    """``study.optimize`` until ``stop`` calls ``study.stop()``: a failed trial does not end it, and the
    objective's callback adds siblings after every trial."""
    study.optimize(objective, catch=(PointFailed,), callbacks=[objective.after_trial, stop],
                   show_progress_bar=False)


def sampler_loop(rc: RunConfig, study: optuna.Study, objective: Objective) -> int:
    """Sample primary trials until the study holds ``study.n_trials`` of them (or a stop condition). Shared with
    other workers, a worker whose remaining trials are all running elsewhere waits for them (and runs the retry
    of any whose worker died) rather than exit early."""
    done = record.count_primaries(study)
    if done >= rc.study.n_trials:
        return done
    bar = tqdm(total=rc.study.n_trials, initial=done, desc=f"study {rc.study.name}", unit="trial",
               disable=not rc.progress)
    stop = StopWhen(rc.study.n_trials, rc.study.timeout_min, rc.study.max_duplicates, bar,
                    reap=objective.reap if objective.shared and rc.storage.heartbeat_interval else None,
                    orphaned_after_s=3.0 * rc.storage.grace_period)
    try:
        _optimize(study, objective, stop)
    finally:
        bar.close()
    if stop.reason and stop.reason != "done":
        print(stop.reason, flush=True)
    return record.count_primaries(study)


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _run_queue(rc: RunConfig, study: optuna.Study, objective: Objective, points: list[DesignPoint],
               table: CutTable, desc: str) -> None:
    for p in points:
        study.enqueue_trial(params_of(p, rc.space, table), skip_if_exists=True)
    n = _waiting(study)
    if not n:
        return
    bar = tqdm(total=n, desc=desc, unit="trial", disable=not rc.progress)

    def until_queue_empty(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if not _waiting(s):
            s.stop()

    try:
        _optimize(study, objective, until_queue_empty)
    finally:
        bar.close()


def paper_step1_points(rc: RunConfig, table: CutTable) -> list[DesignPoint]:
    """The paper's step 1 at 1 bit and the first codec (ZIP): the image and all-in-node points, each split point
    unpruned, and each split point keeping ``study.paper_channels`` channels at the cut conv (earlier layers whole)."""
    codec, radio, bits = rc.space.codecs[0], rc.space.radios[0], min(rc.space.bits)
    pts = list(baseline_points(rc.space, table, bits=bits))
    for j in (j for j in rc.space.partitions if table[j].is_split and table[j].conv is not None):
        c = table.conv_channels[table[j].conv]
        earlier = tuple((e, 1.0) for e in table[j].earlier_convs) if rc.space.prune_earlier else ()
        for k in rc.study.paper_channels:
            if k < c:
                pts.append(DesignPoint(j, bits, k / c, earlier, rc.space.criteria[0], codec, radio))
    return pts


def paper_step2_points(rc: RunConfig, study: optuna.Study, table: CutTable, base_map: float) -> list[DesignPoint]:
    """Step 2: at each j's smallest feasible step-1 payload (Eq. 7/8), prune every earlier node conv to each
    of ``study.paper_ratios`` (Eq. 9/10)."""
    codec, radio = rc.space.codecs[0], rc.space.radios[0]
    pts = []
    done = [(point_of(t.params, rc.space, table), r) for t in study.get_trials(deepcopy=False,
                                                                                 states=(TrialState.COMPLETE,))
            if (r := TrialRecord.from_trial(t)).is_primary]
    for j in (j for j in rc.space.partitions if table[j].earlier_convs):
        cands = [(p, r) for p, r in done if p.j == j and not p.bottleneck and all(k >= 1.0 for _, k in p.layer_keep)
                 and r.mAP50 is not None and constraint_value(r.mAP50, base_map, rc.study.th) <= 0]
        if not cands:
            print(f"paper protocol: no feasible step-1 point at j={j}; step 2 skipped there", flush=True)
            continue
        best, _ = min(cands, key=lambda pr: (pr[1].payload_bytes, -pr[1].mAP50))
        for ratio in rc.study.paper_ratios:
            earlier = tuple((e, float(ratio)) for e in table[j].earlier_convs)
            pts.append(DesignPoint(j, best.bits, best.cut_keep, earlier, rc.space.criteria[0], codec, radio))
    return pts


def paper_protocol(rc: RunConfig, study: optuna.Study, objective: Objective, table: CutTable,
                   base_map: float) -> int:
    """The paper's manual protocol as an enqueued grid (resumable: existing points are skipped)."""
    _run_queue(rc, study, objective, paper_step1_points(rc, table), table, "paper step 1")
    _run_queue(rc, study, objective, paper_step2_points(rc, study, table, base_map), table, "paper step 2")
    return record.count_primaries(study)


def enqueue_anchors(rc: RunConfig, study: optuna.Study, table: CutTable) -> None:
    """``study.enqueue_baselines``: the image (raw and coded), all-in-node and every unpruned split point first (once
    per study)."""
    if rc.study.enqueue_baselines:
        lifecycle.enqueue_once(study, [params_of(p, rc.space, table) for p in baseline_points(rc.space, table)])


def drive(rc: RunConfig, study: optuna.Study, objective: Objective, table: CutTable, base_map: float) -> int:
    """Run the study's protocol: the sampler loop, or the paper's grid."""
    if rc.study.protocol == "paper":
        return paper_protocol(rc, study, objective, table, base_map)
    return sampler_loop(rc, study, objective)
