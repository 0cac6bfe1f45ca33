"""Samplers compared on a design table (:mod:`objectives.table`): one study per (sampler, seed) through the search
code itself, in memory, every design point answered by lookup; hypervolume and front points found after each
budget of model evaluations, against the exhaustive front of the whole table (:mod:`search.convergence`).
``benchmarks/compare_samplers.py`` runs the full comparison; the tests run a slice."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import optuna
import pandas as pd
from omegaconf import OmegaConf

from objectives.table import DesignTable
from search import study as lifecycle
from search.config import RunConfig
from search.convergence import by_evaluation, feasible, hypervolume, reference_point
from search.drivers import drive, enqueue_anchors
from search.objective import Objective, Pricing, score
from search.profiles import CONF_DIR
from search.record import DIRECTIONS, TrialRecord
from search.space import distributions_of
from search.view import pareto_front

SAMPLERS = {  # name -> (conf/sampler/ option, study.protocol, its settings besides). tpe_cl is what the default study
    # runs: TPE as configured, with constant_liar, which make_sampler turns on for a study other workers may join (it
    # only acts on concurrent trials); tpe is the same without it (study.single_worker=true)
    "random": ("random", "search", {}),
    "tpe": ("tpe", "search", {"constant_liar": False}),
    "tpe_cl": ("tpe", "search", {"constant_liar": True}),
    "gp": ("gp", "search", {}),
    "nsga2": ("nsga2", "search", {}),
    "paper": ("random", "paper", {}),
}


def sampler_spec(option: str) -> dict:
    """The settings of ``conf/sampler/<option>.yaml`` (its seed left to the caller)."""
    spec = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / f"{option}.yaml"), resolve=False)
    return {k: v for k, v in spec.items() if k != "seed"}


def overrides(name: str, seed: int, n_trials: int) -> list[str]:
    """Command-line overrides that make the study of sampler ``name`` (:data:`SAMPLERS`) with ``seed``: the whole
    ``study.sampler`` replaced by the conf/sampler/ option's settings (a study file's own sampler settings, like
    study=quick's startup trials, do not leak into another sampler)."""
    option, protocol, extra = SAMPLERS[name]
    spec = {**sampler_spec(option), **extra, "seed": seed}
    out = [f"study.protocol={protocol}", f"study.n_trials={n_trials}", f"study.seed={seed}",
           "~study.sampler", "+study.sampler={" + ",".join(f"{k}:{v}" for k, v in spec.items()) + "}"]
    if name == "tpe":
        out.append("study.single_worker=true")  # else make_sampler turns constant_liar on (a shared study)
    if protocol == "paper":
        out.append("study.enqueue_baselines=false")  # the protocol enqueues them itself, in its own order
    return out


def exhaustive(rc: RunConfig, design: DesignTable, pricing: Pricing) -> list[optuna.trial.FrozenTrial]:
    """Every row of the table on every radio x codec of the space, as complete trials (values, constraints)."""
    out = []
    for acc in design.results.values():
        for radio in rc.space.radios:
            for codec in rc.space.codecs:
                params = {"codec": codec, "radio": radio}
                out.append(score(acc, radio, codec, pricing).trial(params, distributions_of(params, rc.space,
                                                                                            design.cut)))
    return out


def point_id(t: optuna.trial.FrozenTrial) -> tuple[str, str, str]:
    r = TrialRecord.from_trial(t)
    return (r.accuracy_key, r.radio, r.codec)


def run_one(rc: RunConfig, design: DesignTable, pricing: Pricing,
            codecs: tuple[str, ...]) -> list[optuna.trial.FrozenTrial]:
    """One study of ``rc.study.n_trials`` evaluations (or the paper protocol's grid), in memory, through the search
    drivers; returns its trials."""
    sampler = lifecycle.make_sampler(rc)
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
    objective = Objective(study, rc.space, design.cut, pricing, design.lookup, codecs)
    enqueue_anchors(rc, study, design.cut)
    drive(rc, study, objective, design.cut, pricing.baseline_map50)
    return study.get_trials(deepcopy=False)


@dataclass(frozen=True)
class Exhaustive:
    """The whole table on every radio x codec: its trials, the fixed reference point, the front's hypervolume and
    its points (accuracy key, radio, codec)."""

    trials: list[optuna.trial.FrozenTrial]
    reference: tuple[float, float]
    hv: float
    front: set[tuple[str, str, str]]

    @classmethod
    def of(cls, rc: RunConfig, design: DesignTable, pricing: Pricing) -> Exhaustive:
        every = exhaustive(rc, design, pricing)
        ref = reference_point(every)
        return cls(every, ref, hypervolume(every, ref), {point_id(t) for t in pareto_front(every)})

    def score(self, trials: list[optuna.trial.FrozenTrial], budgets: list[int]) -> list[dict]:
        """Per budget: evaluations made, hypervolume / the exhaustive front's, exhaustive front points found."""
        groups = by_evaluation(trials)
        out = []
        for b in budgets:
            seen = [t for g in groups[:b] for t in g]
            found = {point_id(t) for t in seen if feasible(t)} & self.front
            out.append({"budget": b, "evaluations": min(b, len(groups)), "hv": hypervolume(seen, self.reference)
                        / self.hv, "front_found": len(found), "front_size": len(self.front)})
        return out


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per sampler and budget: median and interquartile range of the normalized hypervolume, median front points
    found, and the share of seeds beating random at the same budget and seed (strictly higher hypervolume)."""
    out = []
    rand = df[df.sampler == "random"].set_index(["seed", "budget"])["hv"]
    for (name, b), g in df.groupby(["sampler", "budget"], sort=False):
        q1, med, q3 = g.hv.quantile([0.25, 0.5, 0.75])
        beats = None
        if name != "random" and len(rand):
            paired = [(h, rand.get((s, b))) for s, h in zip(g.seed, g.hv, strict=True)]
            if name == "paper":  # one fixed order against every random seed
                paired = [(g.hv.iloc[0], r) for r in rand.xs(b, level="budget")]
            beats = statistics.mean(float(h > r) for h, r in paired if r is not None)
        out.append({"sampler": name, "budget": b, "seeds": len(g), "hv_median": round(med, 4),
                    "hv_q1": round(q1, 4), "hv_q3": round(q3, 4), "front_found_median": g.front_found.median(),
                    "front_size": int(g.front_size.iloc[0]),
                    "beats_random": None if beats is None else round(beats, 2)})
    return pd.DataFrame(out)
