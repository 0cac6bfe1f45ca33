"""The study as the exports, the report, the convergence history and finalize read it: trials judged at a
threshold, Optuna's constraint-aware Pareto front, and the final training's numbers in place of the search's.

Eq. 4 is judged by one function, :func:`objectives.objective.constraint_value` (feasible when <= 0); the
objectives and their directions are declared once, in :data:`search.record.OBJECTIVES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.objective import constraint_value
from search.record import DIRECTIONS, TrialRecord, legacy_constraints


def judged(t: FrozenTrial, th: float) -> FrozenTrial:
    """Complete trial ``t`` with its mAP constraint (Eq. 4) judged at ``th``: ``t`` itself when nothing changes,
    else a copy (same number) whose constraints and record (``constraint``, ``feasible``, ``infeasible_reason``)
    say what they would have said had the trial run at ``th``."""
    r = TrialRecord.from_trial(t)
    if t.state != TrialState.COMPLETE or r.mAP50 is None or r.baseline_mAP50 is None:
        return t
    c_map = constraint_value(r.mAP50, r.baseline_mAP50, th)
    if r.constraint is not None and c_map == r.constraint:
        return t
    platform = float(t.constraints.get("platform", 0.0))
    cons = {"map50_drop": c_map, "platform": platform}
    reason = r.infeasible_reason if platform > 0 else ("" if c_map <= 0 else "mAP below baseline - th")
    user = dataclasses.replace(r, constraint=c_map, feasible=c_map <= 0 and platform <= 0, infeasible_reason=reason)
    return _copy(t, user.to_attrs(), cons)


def _copy(t: FrozenTrial, user_attrs: dict, constraints: dict[str, float], number: int | None = None) -> FrozenTrial:
    """A complete copy of ``t`` (for the exports' fronts and rows) through Optuna's public ``create_trial``, with
    ``constraints`` and the dashboard's legacy list of them as its only system attrs: nothing downstream reads the
    others, and ``create_trial`` would keep the constraints ``t`` already holds over the new ones."""
    c = optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values,
                                  user_attrs=user_attrs, system_attrs=legacy_constraints(constraints),
                                  constraints=constraints)
    c.number = t.number if number is None else number
    c.datetime_start, c.datetime_complete = t.datetime_start, t.datetime_complete
    return c


def constraints_of(t: FrozenTrial) -> dict[str, float]:
    """The named constraints (Optuna also reads the dashboard's legacy list, as '0', '1')."""
    return {k: v for k, v in t.constraints.items() if not k.isdigit()}


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The feasible Pareto front of ``trials`` (complete, both objectives minimized), by Optuna's own
    constraint-aware ``best_trials`` on an in-memory study; returns the given trial objects."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    mem = optuna.create_study(directions=list(DIRECTIONS))
    mem.add_trials(complete)  # numbered 0..n-1 in the order given
    return [complete[t.number] for t in mem.best_trials]


def latest_finals(finals: list[FrozenTrial]) -> dict[tuple[str, str, str], FrozenTrial]:
    """(accuracy key, radio, codec) -> the newest of the complete final trials ``finals``."""
    out: dict[tuple[str, str, str], FrozenTrial] = {}
    for t in finals:
        r = TrialRecord.from_trial(t)
        if r.accuracy_key and t.state == TrialState.COMPLETE:
            out[(r.accuracy_key, r.radio, r.codec)] = t
    return out


def with_finals(trials: list[FrozenTrial], finals: list[FrozenTrial]) -> list[FrozenTrial]:
    """The search study's complete ``trials``, each replaced by its final trial where ``finals`` has one: a copy
    numbered like the trial it re-trained, with that trial's role and parent, ``fidelity: final`` and
    ``final_trial`` (both lists judged at the same th)."""
    latest = latest_finals(finals)
    out = []
    for t in trials:
        r = TrialRecord.from_trial(t)
        f = latest.get((r.accuracy_key, r.radio, r.codec))
        if f is None:
            out.append(t)
            continue
        user = dataclasses.replace(TrialRecord.from_trial(f), role=r.role, parent=r.parent, fidelity="final",
                                   final_trial=f.number)
        out.append(_copy(f, user.to_attrs(), constraints_of(f), number=t.number))
    return out


def resolve_fidelity(fidelity: str, finals: list[FrozenTrial]) -> str:
    """``auto``: final once the study has complete final trials ``finals``, else search."""
    if fidelity != "auto":
        return fidelity
    return "final" if finals else "search"


@dataclass(frozen=True)
class StudyView:
    """What the exports read of a study.

    Attributes:
        study: the search study.
        trials: all its trials, complete ones judged at ``th`` (trials.csv: search-time numbers).
        pool: its complete trials at ``fidelity`` - the front is built from these.
        finals: the complete final trials (``<name>.final``), empty when the study was never finalized.
        fidelity: ``search`` or ``final`` (resolved from ``auto``).
        th: the threshold feasibility is judged at (None: as stored by each trial).
    """

    study: optuna.Study
    trials: list[optuna.trial.FrozenTrial]
    pool: list[optuna.trial.FrozenTrial]
    finals: list[optuna.trial.FrozenTrial]
    fidelity: str
    th: float | None


def study_view(study: optuna.Study, final_study: optuna.Study | None = None, th: float | None = None,
               fidelity: str = "search") -> StudyView:
    finals = final_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if final_study else []
    fid = resolve_fidelity(fidelity, finals)
    if th is None and fid == "final":
        raise ValueError("a final-fidelity view needs the threshold to judge final trials at")
    trials = study.get_trials(deepcopy=False)
    if th is not None:
        trials, finals = [judged(t, th) for t in trials], [judged(t, th) for t in finals]
    pool = [t for t in trials if t.state == TrialState.COMPLETE]
    if fid == "final":
        pool = with_finals(pool, finals)
    return StudyView(study, trials, pool, finals, fid, th)


def as_view(study: optuna.Study | StudyView) -> StudyView:
    return study if isinstance(study, StudyView) else study_view(study)
