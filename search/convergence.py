"""How far a study has come: the hypervolume of its feasible (node energy, latency) front, after each model
evaluation.

The hypervolume is Optuna's own (``optuna._hypervolume.compute_hypervolume``, the function behind
``optuna.visualization.plot_hypervolume_history``, which is the only public entry and plots per trial, counting
the sibling trials; Optuna has no public function that returns the number). It is taken on log10 of both
objectives: energies and latencies of this space span four decades (BLE 4 vs Wi-Fi, j=0 vs j=6), and on a linear
scale the area would be decided by the one or two largest values. The reference point is fixed by the caller
(:func:`reference_point`: 10 % beyond the worst feasible value in each objective of a reference set of trials),
so hypervolumes taken against one reference point compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from search.record import TrialRecord
from search.view import constraints_of


def feasible(t: FrozenTrial) -> bool:
    """Complete, with every constraint satisfied (<= 0)."""
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in constraints_of(t).values())


def _log(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(math.log10(max(v, 1e-12)) for v in values)


def reference_point(trials: list[FrozenTrial], margin: float = 1.1) -> tuple[float, float]:
    """``margin`` x the worst (largest) feasible energy and latency of ``trials``, in the objectives' units."""
    vals = np.array([t.values for t in trials if feasible(t)], dtype=float)
    if not len(vals):
        raise ValueError("no feasible trial to set the hypervolume's reference point")
    worst = vals.max(0) * margin
    return float(worst[0]), float(worst[1])


def hypervolume(trials: list[FrozenTrial], reference: Sequence[float]) -> float:
    """Hypervolume (log10 mJ x log10 ms) of the feasible trials against ``reference`` (in mJ, ms); 0 when none
    is feasible. Trials that do not dominate the reference point add nothing."""
    ref = np.array(_log(reference))
    pts = np.array([_log(t.values) for t in trials if feasible(t)], dtype=float).reshape(-1, 2)
    pts = pts[(pts < ref).all(1)]
    return float(compute_hypervolume(pts, ref)) if len(pts) else 0.0


def by_evaluation(trials: list[FrozenTrial]) -> list[list[FrozenTrial]]:
    """The trials grouped by model evaluation, in the order evaluated: each counted primary (complete or failed,
    :attr:`TrialRecord.counts`) with its siblings. Trials of no counted primary (duplicates, running) are left
    out."""
    groups: dict[int, list[FrozenTrial]] = {}
    order: list[int] = []
    recs = {t.number: TrialRecord.from_trial(t) for t in trials}
    for t in sorted(trials, key=lambda t: t.number):
        r = recs[t.number]
        if r.is_primary and r.counts:
            groups[t.number] = [t]
            order.append(t.number)
    for t in trials:
        r = recs[t.number]
        if not r.is_primary and r.parent in groups and t.state == TrialState.COMPLETE:
            groups[r.parent].append(t)
    return [groups[n] for n in order]


def history(trials: list[FrozenTrial], reference: Sequence[float]) -> list[float]:
    """Hypervolume after 1, 2, ... model evaluations (siblings included with their primary)."""
    out, seen = [], []
    for group in by_evaluation(trials):
        seen += group
        out.append(hypervolume(seen, reference))
    return out
