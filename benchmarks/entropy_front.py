"""Benchmark: what the entropy codecs change on a finished study's front.

    python benchmarks/entropy_front.py studies/energy_latency.db [--study energy_latency]
        [--out docs/results/entropy_front.md]

The codec is a cost-only axis: every measured model is priced on every radio x codec of the space (the primary
trial and its siblings), so the study holds, for the same models, the options with the byte compressors only
(none, zlib, zstd) and with the entropy codecs (ans, ans_ctx) too. For both sets, over every option and over the
splits alone (a feature map crosses), it writes the feasible Pareto front (node energy, latency), its
hypervolume (Optuna's, on log10 of both objectives, :mod:`search.convergence`) against one reference point (10 %
beyond the worst feasible value of all options), and the front points that use an entropy codec.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.convergence import hypervolume, reference_point
from search.record import TrialRecord
from search.view import pareto_front

ROOT = Path(__file__).resolve().parents[1]
BYTE_CODECS = {"none", "zlib", "zstd", "lzma"}


def describe(t: optuna.trial.FrozenTrial) -> str:
    r = TrialRecord.from_trial(t)
    return (f"| {t.number} | {r.accuracy_key} | {r.radio} | {r.codec} | {r.payload_bytes} | {r.mAP50:.3f} | "
            f"{t.values[0]:.4g} | {t.values[1]:.4g} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--study", default="energy_latency")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/entropy_front.md")
    args = ap.parse_args()
    study = optuna.load_study(study_name=args.study, storage=f"sqlite:///{args.db}")
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    recs = {t.number: TrialRecord.from_trial(t) for t in trials}
    codecs = sorted({r.codec for r in recs.values()})
    if not set(codecs) - BYTE_CODECS:
        raise SystemExit(f"error: study {args.study} has no entropy-coded option (codecs {codecs})")
    ref = reference_point(trials)
    lines = [f"# The entropy codecs on study `{args.study}`'s front\n",
             f"`python benchmarks/entropy_front.py {args.db.name}`: {len(trials)} complete options "
             f"({len({r.accuracy_key for r in recs.values()})} measured models x radios x codecs {codecs}); "
             f"hypervolume on log10(mJ) x log10(ms) against ({ref[0]:.4g} mJ, {ref[1]:.4g} ms).\n",
             "| options | codecs | front points | hypervolume | lowest energy (mJ) | lowest latency (ms) |",
             "|---|---|---|---|---|---|"]
    fronts = {}
    for scope, keep in (("all", lambda r: True),
                        ("splits", lambda r: r.accuracy is not None and r.accuracy.feature_values > 0)):
        for name, allowed in (("byte compressors", BYTE_CODECS), ("+ entropy codecs", set(codecs))):
            pool = [t for t in trials if keep(recs[t.number]) and recs[t.number].codec in allowed]
            front = pareto_front(pool)
            fronts[scope, name] = front
            hv = hypervolume(pool, ref)
            e = min((t.values[0] for t in front), default=float("nan"))
            lat = min((t.values[1] for t in front), default=float("nan"))
            lines.append(f"| {scope} | {name} | {len(front)} | {hv:.4f} | {e:.4g} | {lat:.4g} |")
    for scope in ("all", "splits"):
        new = fronts[scope, "+ entropy codecs"]
        moved = [t for t in new if recs[t.number].codec not in BYTE_CODECS]
        lines += ["", f"## {scope}: the front with the entropy codecs ({len(moved)} of {len(new)} points use one)", "",
                  "| trial | model | radio | codec | payload B | mAP@0.5 | node mJ | latency ms |",
                  "|---|---|---|---|---|---|---|---|", *(describe(t) for t in sorted(new, key=lambda t: t.values[0]))]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
