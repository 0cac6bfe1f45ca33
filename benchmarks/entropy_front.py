"""Benchmark: what the entropy codecs change on a finished study's front.

    python benchmarks/entropy_front.py studies/energy_latency.db [--study energy_latency]
        [--out docs/results/entropy_front.md] [hydra overrides]

The codec is a cost-only axis, so this re-prices every model the study measured (its stored accuracy record:
mAP and the payload of every codec, from the real encoders) on every radio x codec of the run's space with the
current cost profiles (``search.objective.score``, the objective's own pricing; an entropy codec where no feature
map crosses is the ``none`` option and is not counted twice). For the byte compressors alone (none, zlib, zstd) and
with the entropy codecs (ans, ans_ctx) too, over every option and over the splits alone (a feature map crosses),
it writes the feasible Pareto front (node energy, latency), its hypervolume (Optuna's, on log10 of both
objectives, :mod:`search.convergence`) against one reference point (10 % beyond the worst feasible value of all
options), and the front's points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from optuna.trial import TrialState

from models.codec import CODECS
from search.config import compose
from search.convergence import hypervolume, reference_point
from search.objective import score
from search.record import StudyRecord, TrialRecord
from search.view import pareto_front
from search.workbench import measuring

ROOT = Path(__file__).resolve().parents[1]


def describe(t: optuna.trial.FrozenTrial) -> str:
    r = TrialRecord.from_trial(t)
    return (f"| {r.accuracy_key} | {r.radio} | {r.codec} | {r.payload_bytes} | {r.mAP50:.3f} | "
            f"{t.values[0]:.4g} | {t.values[1]:.4g} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--study", default="energy_latency")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/entropy_front.md")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=args.study, storage=f"sqlite:///{args.db}")
    rc = compose(["progress=false", *args.overrides])
    base = StudyRecord.of(study).baseline_mAP50
    _, pricing = measuring(rc, base, rc.train)
    models = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = TrialRecord.from_trial(t)
        if r.is_primary and r.accuracy is not None:
            models.setdefault(r.accuracy.key, r.accuracy)
    options = []  # (trial, is split, uses an entropy codec)
    for acc in models.values():
        split = acc.feature_values > 0
        for radio in rc.space.radios:
            for codec in rc.space.codecs:
                entropy = CODECS[pricing.codecs[codec].codec].entropy
                if entropy and not split:
                    continue  # the none option
                if codec not in acc.payload_mean_bytes and pricing.codecs[codec].codec not in acc.payload_mean_bytes:
                    raise SystemExit(f"error: model {acc.key} was measured without {codec}: run the study with it")
                s = score(acc, radio, codec, pricing)
                t = optuna.trial.create_trial(values=list(s.values), constraints=s.constraints,
                                              user_attrs=s.record.to_attrs())
                options.append((t, split, entropy))
    trials = [t for t, _, _ in options]
    ref = reference_point(trials)
    lines = [f"# The entropy codecs on study `{args.study}`'s front\n",
             f"`python benchmarks/entropy_front.py {args.db.name}`: {len(models)} measured models re-priced on "
             f"{len(rc.space.radios)} radios x codecs {list(rc.space.codecs)} ({len(trials)} options; an entropy "
             f"codec where no feature map crosses is the `none` option), baseline mAP@0.5 {base:.4f}, th "
             f"{rc.study.th}; hypervolume on log10(mJ) x log10(ms) against ({ref[0]:.4g} mJ, {ref[1]:.4g} ms).\n",
             "| options | codecs | front points | hypervolume | lowest energy (mJ) | lowest latency (ms) |",
             "|---|---|---|---|---|---|"]
    fronts = {}
    for scope, keep in (("all", lambda split: True), ("splits", lambda split: split)):
        for name, with_entropy in (("byte compressors", False), ("+ entropy codecs", True)):
            pool = [t for t, split, entropy in options if keep(split) and (with_entropy or not entropy)]
            front = sorted(pareto_front(pool), key=lambda t: t.values[0])
            fronts[scope, name] = front
            e = min((t.values[0] for t in front), default=float("nan"))
            lat = min((t.values[1] for t in front), default=float("nan"))
            lines.append(f"| {scope} | {name} | {len(front)} | {hypervolume(pool, ref):.4f} | {e:.4g} | {lat:.4g} |")
    lines += ["", "## Per radio: the lowest-energy feasible split", "",
              "| radio | byte compressors | mJ | + entropy codecs | mJ | energy ratio |", "|---|---|---|---|---|---|"]
    for radio in rc.space.radios:
        best = {}
        for with_entropy in (False, True):
            pool = [t for t, split, entropy in options if split and (with_entropy or not entropy)
                    and TrialRecord.from_trial(t).radio == radio and TrialRecord.from_trial(t).feasible]
            best[with_entropy] = min(pool, key=lambda t: t.values[0], default=None)
        cells = []
        for b in (best[False], best[True]):
            r = TrialRecord.from_trial(b) if b else None
            cells += [f"{r.accuracy_key}/{r.codec} ({r.payload_bytes} B)" if r else "none feasible",
                      f"{b.values[0]:.4g}" if b else "-"]
        ratio = f"{best[True].values[0] / best[False].values[0]:.3f}" if best[False] and best[True] else "-"
        lines.append(f"| {radio} | " + " | ".join(cells) + f" | {ratio} |")
    for scope in ("all", "splits"):
        for name in ("byte compressors", "+ entropy codecs"):
            front = fronts[scope, name]
            lines += ["", f"## {scope}, {name}: the front", "",
                      "| model | radio | codec | payload B | mAP@0.5 | node mJ | latency ms |",
                      "|---|---|---|---|---|---|---|", *(describe(t) for t in front)]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
