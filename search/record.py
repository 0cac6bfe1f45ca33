"""What a trial and a study store, spelled once.

:class:`TrialRecord` is a trial's user attributes as one typed value: the objective writes it
(:meth:`TrialRecord.to_attrs`), the export, report and dashboard view read it (:meth:`TrialRecord.from_trial`,
:meth:`TrialRecord.row`). :class:`StudyRecord` does the same for the study's user attributes. No other module
spells an attribute key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from objectives.design import is_anchor
from objectives.objective import AccuracyResult

PRIMARY, SIBLING, FINAL = "primary", "sibling", "final"
# The study's objectives (both minimized), declared once: every study, in-memory front and export uses these.
OBJECTIVES = ("node_energy_mJ", "latency_ms")
DIRECTIONS = ("minimize", "minimize")
# The system attr optuna-dashboard 0.21 reads for feasibility (a list); Optuna 5 keeps constraints elsewhere.
LEGACY_CONSTRAINTS = "constraints"


@dataclass(frozen=True)
class TrialRecord:
    """One trial's user attributes.

    A *primary* trial evaluates a design point (its own radio and codec); a *sibling* is the same trained model
    priced on another radio x codec (``parent`` = the primary's number). Fields a trial has not reached are None.

    Attributes:
        role, parent: primary or sibling, and the primary whose model it is.
        radio, codec: the cost-only axes this trial is priced on (profile names).
        accuracy_key: identifies the trained model (:meth:`objectives.design.DesignPoint.accuracy_key`).
        feasible: every constraint holds (mAP and the node platform's memory).
        mAP50, mAP50_95, mAP50_before_finetune, baseline_mAP50: accuracy (COCO AP) of the model and baseline.
        constraint: Eq. 4 as (baseline - th) - mAP50, feasible when <= 0.
        infeasible_reason: why a complete trial is infeasible ('' when feasible).
        payload_bytes, raw_bytes: bytes sent (after the codec, header included) and before the codec.
        node_macs, edge_macs: MACs on each side of the cut after pruning.
        energy, latency: the cost breakdowns (mJ, ms) by part.
        accuracy: everything measured for the model (:class:`AccuracyResult`), shared by its siblings.
        fail_reason: why the trial failed (a trial that failed without one was interrupted).
        duplicate_of: a pruned proposal's model was already in the study (or being trained) in that trial.
        training: this trial won the claim on its accuracy key and trains the model (several workers).
        skipped: why a proposal was pruned without a duplicate (the study's total reached by running trials).
        worker: host:pid of the process that ran the trial.
        heartbeat: last sign of life (unix time) where the storage has no heartbeats of its own (journal).
        final_settings: a *final* trial (role ``final``, in the study ``<name>.final``, ``parent`` = the trial it
            re-trains, same model, radio and codec): digest of the settings of its final training.
        mAP50_search: a final trial's search-time mAP@0.5 (its parent's).
        fidelity, final_trial: set on the copies :mod:`search.finalize` builds for the exports - ``final`` when
            the numbers are the final training's, and that final trial's number.
    """

    role: str = PRIMARY
    parent: int | None = None
    radio: str | None = None
    codec: str | None = None
    accuracy_key: str | None = None
    feasible: bool | None = None
    mAP50: float | None = None  # noqa: N815 - the export's column names
    mAP50_95: float | None = None  # noqa: N815
    mAP50_before_finetune: float | None = None  # noqa: N815
    baseline_mAP50: float | None = None  # noqa: N815
    constraint: float | None = None
    infeasible_reason: str | None = None
    payload_bytes: int | None = None
    raw_bytes: int | None = None
    node_macs: int | None = None
    edge_macs: int | None = None
    energy: dict[str, float] | None = None
    latency: dict[str, float] | None = None
    accuracy: AccuracyResult | None = None
    fail_reason: str | None = None
    duplicate_of: int | None = None
    training: bool | None = None
    skipped: str | None = None
    worker: str | None = None
    heartbeat: float | None = None
    final_settings: str | None = None
    mAP50_search: float | None = None  # noqa: N815
    fidelity: str | None = None
    final_trial: int | None = None
    # not stored: filled from the frozen trial
    number: int | None = field(default=None, compare=False)
    state: TrialState | None = field(default=None, compare=False)

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes to store (JSON-able; unset fields are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or f.name in ("number", "state"):
                continue
            out[f.name] = v.as_attrs() if isinstance(v, AccuracyResult) else v
        return out

    @classmethod
    def from_trial(cls, t: optuna.trial.FrozenTrial) -> TrialRecord:
        ua = t.user_attrs
        names = {f.name for f in dataclasses.fields(cls)} - {"number", "state", "accuracy"}
        kw: dict[str, Any] = {k: ua[k] for k in names if k in ua}
        kw.setdefault("parent", t.number)
        acc = ua.get("accuracy")
        return cls(**kw, accuracy=AccuracyResult.from_attrs(acc) if acc else None, number=t.number, state=t.state)

    @property
    def is_primary(self) -> bool:
        return self.role == PRIMARY

    @property
    def interrupted(self) -> bool:
        """A trial that failed without a reason of its own: its process died (kill -9, a lost worker)."""
        return self.state == TrialState.FAIL and not self.fail_reason

    @property
    def counts(self) -> bool:
        """Counts towards ``study.n_trials``: a primary trial that completed or failed for a reason of its own."""
        return self.is_primary and (self.state == TrialState.COMPLETE or (self.state == TrialState.FAIL
                                                                          and not self.interrupted))

    def for_retry(self) -> dict[str, Any]:
        """The user attrs a re-queued copy of this trial starts with: what it is, not how its run went."""
        return TrialRecord(role=self.role, parent=self.parent if self.role != PRIMARY else None, radio=self.radio,
                           codec=self.codec).to_attrs()

    def row(self, t: optuna.trial.FrozenTrial, param_columns: tuple[str, ...]) -> dict[str, Any]:
        """The flat export row of trial ``t``: parameters, objectives, accuracy, payload, cost breakdowns."""
        r: dict[str, Any] = {"trial": t.number, "state": t.state.name, "role": self.role, "parent": self.parent,
                             "fidelity": self.fidelity or ("final" if self.role == FINAL else "search")}
        for k in param_columns:
            r[k] = t.params.get(k)
        r["accuracy_key"] = self.accuracy_key
        r["radio"] = self.radio if self.radio is not None else t.params.get("radio")
        r["codec"] = self.codec if self.codec is not None else t.params.get("codec")
        vals = t.values if t.values is not None else [math.nan, math.nan]
        r["node_energy_mJ"], r["latency_ms"] = vals[0], vals[1]
        for k in ("mAP50", "mAP50_95", "mAP50_before_finetune", "baseline_mAP50", "constraint", "feasible",
                  "infeasible_reason", "payload_bytes", "raw_bytes", "node_macs", "edge_macs", "fail_reason"):
            r[k] = getattr(self, k)
        r["mAP50_search"] = self.mAP50_search if self.mAP50_search is not None else self.mAP50
        r["final_trial"] = self.final_trial if self.final_trial is not None else (
            t.number if self.role == FINAL else None)
        platform = t.constraints.get("platform") if t.state == TrialState.COMPLETE else None
        r["platform_feasible"] = None if platform is None else bool(platform <= 0)
        for group in ("energy", "latency"):
            for k, v in (getattr(self, group) or {}).items():
                r[f"{group}.{k}"] = v
        acc = self.accuracy
        r["cut_shape"] = "x".join(map(str, acc.cut_shape)) if acc and acc.cut_shape else None
        r["image_codec"] = acc.image_codec if acc else None  # j=0: '' for the raw image, else jpeg / webp
        r["image_quality"] = acc.quality if acc and acc.image_codec else None
        r["entropy_bytes"] = acc.entropy_bytes if acc else None
        r["finetune_seconds"] = acc.finetune_seconds if acc else None
        r["finetune_steps"] = acc.finetune_steps if acc else None
        r["finetune_skipped"] = acc.finetune_skipped if acc else None  # finetune_when=needed: met the constraint as is
        return r


def write(trial: optuna.Trial, record: TrialRecord) -> None:
    """Store ``record`` on a running trial."""
    for k, v in record.to_attrs().items():
        trial.set_user_attr(k, v)


def set_constraints(trial: optuna.Trial, constraints: dict[str, float]) -> None:
    """Optuna 5's constraints (``trial.set_constraint``) and the legacy list optuna-dashboard 0.21 reads."""
    for k, v in constraints.items():
        trial.set_constraint(k, v)
    # Optuna has no setter for a running trial's system attrs (Trial.set_system_attr was removed); the dashboard's
    # feasibility view needs this one list, so it is written through the storage's public API, which addresses the
    # trial by its study and number.
    storage = trial.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(trial.study.study_name), trial.number)
    storage.set_trial_system_attr(trial_id, LEGACY_CONSTRAINTS, list(constraints.values()))


def legacy_constraints(constraints: dict[str, float]) -> dict[str, Any]:
    """System attrs that carry the legacy constraint list on a trial created with ``create_trial``."""
    return {LEGACY_CONSTRAINTS: list(constraints.values())}


@dataclass(frozen=True)
class StudyRecord:
    """The study's user attributes: its baseline, the settings its trials were measured with, and progress.

    Attributes:
        baseline_key: identifies the baseline checkpoint and the mAP settings ``baseline_mAP50`` holds for.
        baseline_mAP50, baseline_mAP50_95: the unsplit baseline's accuracy on the validation set.
        space: repr of the design space the study was created with.
        accuracy_settings: repr of the data/model/train/eval settings the trials were measured with.
        baselines_enqueued: the unpruned anchor points were queued once.
        workers_joined: how many workers joined the study while another one was running (their seeds differ).
        model: the detector the study splits: cfg name and where its weights come from (a weights file's
            SHA-256 prefix, or the baseline checkpoint trained here).
        node_j: the partition index at which everything runs on the node (the model's last cut point).
    """

    baseline_key: str | None = None
    baseline_mAP50: float | None = None  # noqa: N815
    baseline_mAP50_95: float | None = None  # noqa: N815
    space: str | None = None
    accuracy_settings: str | None = None
    baselines_enqueued: bool | None = None
    workers_joined: int | None = None
    model: str | None = None
    node_j: int | None = None

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        ua = study.user_attrs
        return cls(**{f.name: ua[f.name] for f in dataclasses.fields(cls) if f.name in ua})

    def save(self, study: optuna.Study) -> None:
        """Store every set field (fields left None keep what the study holds)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                study.set_user_attr(f.name, v)


def records(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
    """The records of the study's trials in ``states`` (all when None), read in one storage call."""
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False, states=states)]


def count_primaries(study: optuna.Study) -> int:
    """Primary trials that count towards ``study.n_trials`` (see :attr:`TrialRecord.counts`)."""
    return sum(r.counts for r in records(study, (TrialState.COMPLETE, TrialState.FAIL)))


def front_keys(study: optuna.Study) -> set[str]:
    """Accuracy keys of the current feasible Pareto front (Optuna's constraint-aware ``best_trials``)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return set()
    return {r.accuracy.key for t in study.best_trials if (r := TrialRecord.from_trial(t)).accuracy is not None}


def anchor_keys(study: optuna.Study) -> set[str]:
    """Accuracy keys of the unpruned evaluated points (j=0, the all-node point and each unpruned split)."""


    return {r.accuracy.key for r in records(study, (TrialState.COMPLETE,))
            if r.accuracy is not None and is_anchor(r.accuracy.key)}
