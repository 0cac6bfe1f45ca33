"""``mode=finalize``: the final training of the front, and how far search-time accuracy agrees with it.

Every trial judges Eq. 4's constraint after a short fine-tuning (``train.finetune``, 40 steps). Here the models
that matter - every model on the feasible Pareto front, and every model whose search-time mAP@0.5 is less than
``finalize.margin`` below the threshold (an aggressive point a full fine-tune may lift above it) - are trained
again from the baseline with the final budget (``train.final``, the same recipe), measured again (mAP@0.5,
mAP@[.5:.95], payload bytes per codec, MACs) and priced again on every radio x codec the study holds.

Where the results live: the study ``<name>.final`` in the same storage holds one *final* trial per (model, radio,
codec), with the same parameters as the trial it re-trains (``parent``), its own values and constraints, and
role ``final``. The search study is never written to, so its sampler and its dashboard view stay as they were;
the dashboard shows ``<name>.final`` as a study of its own (its own Pareto front). The final weights are kept in
``studies/<name>/final-models/`` for ``mode=deploy``. A rerun skips the models already finalized with the same
settings (it is resumable after a kill at any point: a model is trained again only when none of its final trials
was stored).

The exports (``search.export.study_view``) read both studies once: every complete trial with its constraint
judged at the configured ``study.th`` (:func:`judged`), and with ``export.fidelity=final`` the final trial's
numbers in place of the search-time ones wherever they exist (:func:`with_finals`; the row says
``fidelity: final``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.fit import TrainingDiverged
from objectives.objective import AccuracyResult, constraint_value
from search.record import FINAL, TrialRecord, legacy_constraints

SUFFIX = ".final"
OBJECTIVES = ("node_energy_mJ", "latency_ms")


def final_name(study_name: str) -> str:
    return f"{study_name}{SUFFIX}"


def load_final(storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study | None:
    """The study of final trials, or None when the study was never finalized."""
    try:
        return optuna.load_study(study_name=final_name(study_name), storage=storage)
    except KeyError:
        return None


def open_final(storage: optuna.storages.BaseStorage, study: optuna.Study) -> optuna.Study:
    fs = optuna.create_study(study_name=final_name(study.study_name), storage=storage,
                             directions=["minimize", "minimize"], load_if_exists=True)
    fs.set_metric_names(list(OBJECTIVES))
    fs.set_user_attr("search_study", study.study_name)
    return fs


def settings_digest(settings: str) -> str:
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ judging and fronts


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
    user = {**t.user_attrs, "constraint": c_map, "feasible": c_map <= 0 and platform <= 0, "infeasible_reason": reason}
    return _copy(t, user, cons)


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
    mem = optuna.create_study(directions=["minimize", "minimize"])
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
        user = {**f.user_attrs, "role": r.role, "parent": r.parent, "fidelity": "final", "final_trial": f.number}
        out.append(_copy(f, user, constraints_of(f), number=t.number))
    return out


def resolve_fidelity(fidelity: str, finals: list[FrozenTrial]) -> str:
    """``auto``: final once the study has complete final trials ``finals``, else search."""
    if fidelity != "auto":
        return fidelity
    return "final" if finals else "search"


# ------------------------------------------------------------------------------------------ which points


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Candidate:
    """A model to finalize. ``trials``: the search study's complete trials of that model (one per radio x codec);
    ``dominated_by``: how many front points dominate its best trial (0 on the front); ``gap``: how far its
    search-time mAP@0.5 lies below the threshold (<= 0 when feasible)."""

    key: str
    trials: tuple[FrozenTrial, ...]
    mAP50: float  # noqa: N815
    on_front: bool
    dominated_by: int
    gap: float


def candidates(trials: list[FrozenTrial], margin: float, max_points: int) -> list[Candidate]:
    """The models :func:`finalize` trains, nearest the front first: every model on the feasible Pareto front of
    ``trials`` (judged trials: feasibility at the configured th), then every platform-feasible model whose mAP@0.5
    lies less than ``margin`` below the threshold, ordered by how many front points dominate it, then by that
    distance; at most ``max_points``."""
    front = pareto_front(trials)
    front_keys = {TrialRecord.from_trial(t).accuracy_key for t in front}
    front_values = [tuple(t.values) for t in front]
    by_key: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        key = TrialRecord.from_trial(t).accuracy_key
        if key and t.state == TrialState.COMPLETE:
            by_key.setdefault(key, []).append(t)
    out = []
    for key, ts in by_key.items():
        r = TrialRecord.from_trial(ts[0])
        gap = float(r.constraint) if r.constraint is not None else math.nan
        if key in front_keys:
            out.append(Candidate(key, tuple(ts), float(r.mAP50), True, 0, gap))
            continue
        able = [t for t in ts if float(t.constraints.get("platform", 0.0)) <= 0]
        if not able or not 0 < gap <= margin:
            continue
        dom = min(sum(_dominates(f, tuple(t.values)) for f in front_values) for t in able)
        out.append(Candidate(key, tuple(ts), float(r.mAP50), False, dom, gap))
    energy = {c.key: min(t.values[0] for t in c.trials) for c in out}
    out.sort(key=lambda c: (not c.on_front, c.dominated_by, max(c.gap, 0.0), energy[c.key], c.key))
    return out[:max_points]


# ------------------------------------------------------------------------------------------ running it


@dataclass(frozen=True)
class Finalized:
    """One finalized model: search-time and final accuracy, and what it cost."""

    key: str
    mAP50_search: float  # noqa: N815
    mAP50_final: float  # noqa: N815
    mAP50_95_search: float  # noqa: N815
    mAP50_95_final: float  # noqa: N815
    seconds: float
    trained: bool  # False: its final result was already stored (resumed)
    feasible_search: bool
    feasible_final: bool


def finalize(study: optuna.Study, final_study: optuna.Study, cands: list[Candidate], settings: str, th: float,
             train: Callable[[FrozenTrial], AccuracyResult], score, log: Callable[[str], None] = print
             ) -> list[Finalized]:
    """Re-train every candidate with ``train`` (the final budget) and store one final trial per (model, radio,
    codec) the search study holds; ``score(acc, radio, codec, **record_fields)`` prices a result like a search
    trial (:func:`search.objective.score`). ``settings``: the final training's settings (a model finalized with
    the same settings is not trained again; a half-stored one reuses its stored result)."""
    digest = settings_digest(settings)
    final_study.set_user_attr(f"settings:{digest}", settings)
    done: dict[str, dict[tuple[str, str], FrozenTrial]] = {}
    for t in final_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = TrialRecord.from_trial(t)
        if r.final_settings == digest and r.accuracy_key:
            done.setdefault(r.accuracy_key, {})[(r.radio, r.codec)] = t
    out = []
    for i, c in enumerate(cands):
        have = done.get(c.key, {})
        t0 = time.time()
        stored = next(iter(have.values()), None)
        trained = stored is None
        try:
            acc = train(c.trials[0]) if trained else TrialRecord.from_trial(stored).accuracy
            if not math.isfinite(acc.map50):
                raise TrainingDiverged(f"mAP is {acc.map50}")
        except TrainingDiverged as e:
            log(f"finalize {i + 1}/{len(cands)}: {c.key}: the final training failed ({e}); its search-time numbers "
                f"stay")
            continue
        if acc.key != c.key:
            raise ValueError(f"finalize: trial {c.trials[0].number} re-trains as {acc.key}, not {c.key} (was the "
                             f"space or model changed since the study ran?)")
        for t in c.trials:
            r = TrialRecord.from_trial(t)
            if (r.radio, r.codec) in have:
                continue
            s = score(acc, r.radio, r.codec, role=FINAL, parent=t.number, final_settings=digest, mAP50_search=r.mAP50)
            final_study.add_trial(s.trial(t.params, t.distributions))
        r0 = TrialRecord.from_trial(c.trials[0])
        f = Finalized(c.key, float(r0.mAP50), float(acc.map50), float(r0.mAP50_95), float(acc.map50_95),
                      time.time() - t0, trained, c.gap <= 0, constraint_value(acc.map50, r0.baseline_mAP50, th) <= 0)
        out.append(f)
        change = "" if f.feasible_search == f.feasible_final else (
            " (now feasible)" if f.feasible_final else " (now infeasible)")
        how = f"{acc.finetune_steps} steps, {f.seconds:.0f} s" if trained else "stored before"
        log(f"finalize {i + 1}/{len(cands)}: {c.key}: mAP@0.5 {f.mAP50_search:.3f} -> {f.mAP50_final:.3f} "
            f"({how}){change}")
    return out


# ------------------------------------------------------------------------------------------ agreement


@dataclass(frozen=True)
class Agreement:
    """Search-time vs final mAP@0.5 over the finalized models."""

    n: int
    kendall_tau: float
    mean_abs_change: float
    mean_change: float
    became_feasible: tuple[str, ...]
    became_infeasible: tuple[str, ...]


def agreement(search: list[float], final: list[float], keys: list[str], threshold: float) -> Agreement:
    """Kendall's tau-b between the two rankings (scipy; NaN under two points or with a constant side), the mean
    absolute and signed change final - search, and the models whose feasibility (mAP@0.5 >= ``threshold``)
    changed."""
    from scipy.stats import kendalltau

    n = len(search)
    tau = float(kendalltau(search, final).statistic) if n >= 2 else math.nan
    diffs = [f - s for s, f in zip(search, final, strict=True)]
    up = tuple(k for k, s, f in zip(keys, search, final, strict=True) if s < threshold <= f)
    down = tuple(k for k, s, f in zip(keys, search, final, strict=True) if f < threshold <= s)
    return Agreement(n, tau, sum(map(abs, diffs)) / n if n else math.nan, sum(diffs) / n if n else math.nan, up, down)
