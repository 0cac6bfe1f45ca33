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

The exports (``search.view.study_view``) read both studies once: every complete trial with its constraint
judged at the configured ``study.th`` (:func:`judged`), and with ``export.fidelity=final`` the final trial's
numbers in place of the search-time ones wherever they exist (:func:`with_finals`; the row says
``fidelity: final``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.fit import TrainingDiverged
from objectives.objective import AccuracyResult, constraint_value
from search.profiles import ConfigError
from search.record import DIRECTIONS, FINAL, OBJECTIVES, StudyRecord, TrialRecord
from search.settings import difference, digest
from search.view import judged, pareto_front

SUFFIX = ".final"


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
                             directions=list(DIRECTIONS), load_if_exists=True)
    fs.set_metric_names(list(OBJECTIVES))
    fs.set_user_attr("search_study", study.study_name)
    return fs


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
    settings_key = digest(settings)
    final_study.set_user_attr(f"settings:{settings_key}", settings)
    done: dict[str, dict[tuple[str, str], FrozenTrial]] = {}
    for t in final_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = TrialRecord.from_trial(t)
        if r.final_settings == settings_key and r.accuracy_key:
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
            s = score(acc, r.radio, r.codec, role=FINAL, parent=t.number, final_settings=settings_key,
                      mAP50_search=r.mAP50)
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


# ------------------------------------------------------------------------------------------ the mode


def finalize_run(wb, study: optuna.Study, storage) -> list[Finalized]:
    """``mode=finalize``: re-train the front (and the models just below the threshold) with ``train.final`` and
    store the results in ``<study>.final``; prints the agreement with the search. ``wb``: the run's
    :class:`search.workbench.Workbench`."""
    from objectives.objective import measure
    from search.deploy.store import WeightStore
    from search.objective import score
    from search.space import point_of
    from search.workbench import final_training

    t0, rc = time.time(), wb.rc
    rec = StudyRecord.of(study)
    if rec.baseline_mAP50 is None:
        raise ConfigError(f"finalize: study {rc.study.name} has no measured baseline (run it first)")
    model_name, searched = wb.model_name, wb.settings()
    diff = difference(rec.accuracy_settings, rc, model_name)
    if diff:
        raise ConfigError(f"finalize: the data/model/train/eval settings differ from those study {rc.study.name} was "
                          f"measured with (first difference: {diff}; model now: {model_name}; study: {rec.model}); "
                          f"finalize with the study's settings")
    table = wb.cut
    trials = [judged(t, rc.study.th) for t in study.get_trials(deepcopy=False,
                                                                 states=(optuna.trial.TrialState.COMPLETE,))]
    cands = candidates(trials, rc.finalize.margin, rc.finalize.max_points)
    names = {(r.radio, r.codec) for t in trials if (r := TrialRecord.from_trial(t)).radio}
    settings, pricing = wb.measuring(float(rec.baseline_mAP50), final_training(rc.train),
                                     radios={r for r, _ in names}, codecs={c for _, c in names})
    store = WeightStore(wb.export_dir / "final-models")

    def train_one(t: optuna.trial.FrozenTrial):
        point = point_of(t.params, rc.space, table)
        m = measure(point, wb.baseline.model, wb.train, wb.val, settings, wb.device)
        store.save(m.result.key, m.model, m.kept)
        return m.result

    budget = (f"{rc.train.final.steps} steps" if rc.train.final.steps > 0 else f"{rc.train.final.epochs:g} epochs")
    n_front = sum(c.on_front for c in cands)
    print(f"finalize: {len(cands)} models ({n_front} on the feasible front at th={rc.study.th:g}, "
          f"{len(cands) - n_front} within finalize.margin={rc.finalize.margin:g} below the threshold "
          f"{rec.baseline_mAP50 - rc.study.th:.4f}; finalize.max_points={rc.finalize.max_points}), train.final: "
          f"{budget}; results in study {final_name(rc.study.name)}", flush=True)
    fs = open_final(storage, study)
    done = finalize(study, fs, cands, f"{searched} final={rc.train.final!r}", rc.study.th, train_one,
                    lambda acc, radio, codec, **kw: score(acc, radio, codec, pricing, **kw),
                    log=lambda m: print(m, flush=True))
    trained = [f.seconds for f in done if f.trained]
    if done:
        a = agreement([f.mAP50_search for f in done], [f.mAP50_final for f in done], [f.key for f in done],
                      rec.baseline_mAP50 - rc.study.th)
        print(f"finalize: {len(trained)} models trained ({len(done) - len(trained)} stored before), "
              + (f"median {sorted(trained)[len(trained) // 2]:.0f} s each, " if trained else "")
              + f"{time.time() - t0:.0f} s in all; search vs final mAP@0.5: Kendall tau {a.kendall_tau:.3f}, mean "
              f"|change| {a.mean_abs_change:.4f} (mean {a.mean_change:+.4f}); now feasible: "
              f"{len(a.became_feasible)}, now infeasible: {len(a.became_infeasible)}", flush=True)
    return done
