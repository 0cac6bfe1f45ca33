"""The study's objective: one primary trial evaluates one design point; its model is priced on every other
radio x codec of the space as sibling trials.

The accuracy part (split, prune, fine-tune, mAP, payload) runs once per accuracy key and is injected as a
callable, so the trial loop is tested with a stub in milliseconds; the cost part is a pure function of its
result (:func:`score`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from models.codec import CODECS
from models.cut_points import CutTable
from objectives.costs import (
    CodecProfile,
    CostBreakdown,
    EdgeProfile,
    ImageCodecProfile,
    ProcessorProfile,
    RadioProfile,
)
from objectives.design import DesignPoint, PointFailed
from objectives.fit import TrainingDiverged
from objectives.objective import AccuracyResult, constraint_value, evaluate_costs, node_work
from search import record
from search.config import SpaceConfig
from search.record import SIBLING, TrialRecord
from search.space import distributions_of, suggest
from search.workers import AttrHeartbeat, Claims, reap_stale, surplus, worker_id

Evaluate = Callable[[DesignPoint], AccuracyResult]


@dataclass(frozen=True)
class Shared:
    """How this objective shares its study with other workers (None: it owns the study alone)."""

    claims: Claims
    liveness: AttrHeartbeat | None  # None where the storage has Optuna's heartbeats
    n_trials: int | None  # the study's total (None: a driver that decides it, the paper grid)


@dataclass(frozen=True)
class Pricing:
    """Everything :func:`score` needs besides the measured model: profiles, the threshold and the baseline."""

    node: ProcessorProfile
    edge: EdgeProfile
    radios: dict[str, RadioProfile]
    codecs: dict[str, CodecProfile]
    th: float
    baseline_map50: float
    images: dict[str, ImageCodecProfile] = dataclasses.field(default_factory=dict)  # format -> the node's encoder


@dataclass(frozen=True)
class Scored:
    values: tuple[float, float]  # (node_energy_mJ, latency_ms)
    constraints: dict[str, float]  # feasible when all <= 0
    record: TrialRecord
    cost: CostBreakdown

    def trial(self, params: dict[str, Any],
              distributions: dict[str, optuna.distributions.BaseDistribution]) -> optuna.trial.FrozenTrial:
        """This result as a complete trial to add to a study (siblings, final trials, an exhaustive table): its
        values, record, constraints (Optuna 5's) and the legacy constraint list optuna-dashboard 0.21 reads."""
        return optuna.trial.create_trial(params=params, distributions=distributions, values=list(self.values),
                                         user_attrs=self.record.to_attrs(),
                                         system_attrs=record.legacy_constraints(self.constraints),
                                         constraints=self.constraints)


def score(acc: AccuracyResult, radio: str, codec: str, p: Pricing, **record_fields: Any) -> Scored:
    """The cost of a measured model on one radio and codec, its constraints and its record - the same for a
    primary trial and its siblings."""
    prof = p.codecs[codec]
    cost = evaluate_costs(acc, p.node, p.edge, p.radios[radio], prof, p.images)
    c_map = constraint_value(acc.map50, p.baseline_map50, p.th)
    constraints = {"map50_drop": c_map, "platform": 0.0 if cost.feasible else 1.0}
    d = cost.as_dict()
    rec = TrialRecord(
        radio=radio, codec=codec, accuracy_key=acc.key, feasible=c_map <= 0 and cost.feasible,
        mAP50=acc.map50, mAP50_95=acc.map50_95, mAP50_before_finetune=acc.map50_before_finetune,
        baseline_mAP50=p.baseline_map50, constraint=c_map,
        infeasible_reason=cost.reason if not cost.feasible else ("" if c_map <= 0 else "mAP below baseline - th"),
        payload_bytes=node_work(acc, prof.codec).payload_bytes, raw_bytes=acc.raw_bytes,
        node_macs=acc.node_macs, edge_macs=acc.edge_macs,
        energy={k: v for k, v in d.items() if k.endswith("_mj")},
        latency={k: v for k, v in d.items() if k.endswith("_ms")}, accuracy=acc, **record_fields)
    return Scored((cost.node_energy_mj, cost.latency_ms), constraints, rec, cost)


class Objective:
    """``objective(trial)`` for ``study.optimize``; :meth:`after_trial` is its callback (siblings, failures).

    It keeps two indexes, rebuilt from the study on construction so a resumed run sees the same: trained models
    by accuracy key (never trained twice), and (accuracy key, radio, codec) -> trial number (a re-proposal of
    a point already in the study is pruned as a duplicate and does not count).
    """

    def __init__(self, study: optuna.Study, space: SpaceConfig, table: CutTable, pricing: Pricing,
                 evaluate: Evaluate, codec_algorithms: tuple[str, ...], shared: Shared | None = None) -> None:
        self.space, self.table, self.pricing, self.evaluate = space, table, pricing, evaluate
        self.algorithms, self.shared = codec_algorithms, shared
        self.cache: dict[str, AccuracyResult] = {}
        self.evaluated: dict[tuple[str, str, str], int] = {}
        self.trial_seconds: list[float] = []
        self.sibling_seconds = 0.0
        self.mine: list[int] = []  # primaries this process completed
        self.refresh(study)

    def reap(self, study: optuna.Study) -> None:
        """Fail and re-queue the trials of dead workers (heartbeats: Optuna's, or this storage's attr)."""
        reap_stale(study, self.shared.liveness if self.shared else None)

    def refresh(self, study: optuna.Study, recs: list[TrialRecord] | None = None) -> None:
        """Learn the complete trials' models and (model, radio, codec) from the study (other workers' too);
        ``recs``: records already read from it."""
        for r in recs if recs is not None else record.records(study, (TrialState.COMPLETE,)):
            if r.state != TrialState.COMPLETE:
                continue
            self._remember(r)
            if r.accuracy and set(self.algorithms) <= set(r.accuracy.payload_mean_bytes) and self.reusable(r.accuracy):
                self.cache.setdefault(r.accuracy.key, r.accuracy)

    def option(self, codec: str, split: bool) -> str:
        """The codec a trial's payload really goes through: an entropy codec (``ans``, ``ans_ctx``) codes feature
        maps only, so where the image or the detections cross it is the same option as sending them as they are
        (``none``) - one trial, not three identical ones."""
        prof = self.pricing.codecs.get(codec)
        return "none" if not split and prof is not None and CODECS[prof.codec].entropy else codec

    def _remember(self, r: TrialRecord) -> None:
        """Note which (model, radio, codec) a complete trial holds, so a re-proposal is recognised."""
        if r.accuracy_key:
            split = r.accuracy is None or r.accuracy.feature_values > 0
            self.evaluated.setdefault((r.accuracy_key, r.radio, self.option(r.codec, split)), r.number)

    def reusable(self, acc: AccuracyResult) -> bool:
        """A stored model answers a re-proposal of its point unless it was kept un-fine-tuned for meeting a
        constraint this run's no longer holds (a stricter ``study.th``): then the point is measured again."""
        p = self.pricing
        return not acc.finetune_skipped or constraint_value(acc.map50, p.baseline_map50, p.th) <= 0

    def accuracy(self, point: DesignPoint) -> AccuracyResult:
        key = point.accuracy_key(self.table)
        if key not in self.cache:
            self.cache[key] = self.evaluate(point)
        return self.cache[key]

    # ------------------------------------------------------------------------------------------ a trial
    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        t0 = time.time()
        beating = (self.shared.liveness.beating(trial) if self.shared and self.shared.liveness
                   else contextlib.nullcontext())
        try:
            with beating:
                return self._objective(trial)
        finally:
            self.trial_seconds.append(time.time() - t0)

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        point = suggest(trial, self.space, self.table)
        record.write(trial, TrialRecord(radio=point.radio, codec=point.codec, worker=worker_id()))
        key = point.accuracy_key(self.table)
        sh = self.shared
        if sh:  # other workers: learn what they finished, and stop at the study's total
            if sh.liveness:  # (Optuna reaps heartbeat storages itself before each trial)
                sh.liveness.reap(trial.study)
            recs = record.records(trial.study, (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
            self.refresh(trial.study, recs)
            if sh.n_trials and surplus(recs, trial.number, sh.n_trials):
                record.write(trial, TrialRecord(skipped="the study's n_trials is reached by running trials"))
                raise optuna.TrialPruned("study total reached")
        dup = self.evaluated.get((key, point.radio, self.option(point.codec, self.table[point.j].is_split)))
        if dup is None and sh and key not in self.cache:
            dup = sh.claims.claim(trial.study, trial, key)  # another worker trains (or trained) this model
        if dup is not None:
            # the same model on the same radio and codec is already in the study (as a trial or a sibling)
            record.write(trial, TrialRecord(duplicate_of=dup))
            raise optuna.TrialPruned(f"duplicate of trial {dup}")
        try:
            acc = self.accuracy(point)
            if not math.isfinite(acc.map50):
                raise TrainingDiverged(f"mAP is {acc.map50} for {acc.key}")
        except PointFailed as e:
            record.write(trial, TrialRecord(fail_reason=str(e)))
            raise
        s = score(acc, point.radio, point.codec, self.pricing)
        record.set_constraints(trial, s.constraints)
        record.write(trial, s.record)
        self.mine.append(trial.number)
        before = "not fine-tuned: meets the constraint as it is, " if acc.finetune_skipped else \
            "" if math.isnan(acc.map50_before_finetune) else f"before fine-tune {acc.map50_before_finetune:.3f}, "
        tqdm.write(f"trial {trial.number}: {acc.key} -> mAP@0.5 {acc.map50:.3f} ({before}{acc.seconds:.0f} s), "
                   f"{s.record.payload_bytes} B; {point.radio}/{point.codec}: {s.cost.node_energy_mj:.3f} mJ, "
                   f"{s.cost.latency_ms:.2f} ms{'' if s.record.feasible else ' (infeasible)'}")
        return s.values

    # ------------------------------------------------------------------------------------------ after it
    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """``study.optimize`` callback: report a failure, add the siblings of a completed primary."""
        r = TrialRecord.from_trial(trial)
        if trial.state == TrialState.FAIL:
            tqdm.write(f"trial {trial.number} failed: {r.fail_reason or 'see the study'}; the study goes on")
        self.add_siblings(study, trial)

    def finish_siblings(self, study: optuna.Study) -> int:
        """Add what is missing of the siblings of this process's trials (after the storage came back mid-way)."""
        mine = set(self.mine)
        self.refresh(study)
        return sum(self.add_siblings(study, t, refresh=False)
                   for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in mine)

    def add_siblings(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, refresh: bool = True) -> int:
        """Add a sibling trial for every radio x codec of the space the primary did not take (idempotent).
        ``refresh=False``: the caller has just refreshed the index (adding the siblings of many trials)."""
        r = TrialRecord.from_trial(trial)
        if trial.state != TrialState.COMPLETE or not r.is_primary or r.accuracy is None:
            return 0
        if self.shared and refresh:
            self.refresh(study)  # siblings another worker added meanwhile
        self._remember(r)
        t0 = time.time()
        base = {k: v for k, v in trial.params.items() if k not in ("codec", "radio")}
        added = 0
        split = r.accuracy.feature_values > 0
        for radio in self.space.radios:
            for codec in self.space.codecs:
                option = (r.accuracy.key, radio, self.option(codec, split))
                if option in self.evaluated:  # the primary itself, added before, or the same option
                    continue
                s = score(r.accuracy, radio, codec, self.pricing, role=SIBLING, parent=trial.number)
                params = {**base, "codec": codec, "radio": radio}
                study.add_trial(s.trial(params, distributions_of(params, self.space, self.table)))
                self.evaluated.setdefault(option, trial.number)
                added += 1
        self.sibling_seconds += time.time() - t0
        return added
