"""Benchmark (issue #25): the rate-accuracy figure of the README - mAP@0.5 against payload bytes per image for four
ways of sending what the edge needs, measured on the same baseline and validation set with the same adaptation
budget:

1. the quantized cut with a byte compressor (``none`` / ``zlib`` / ``zstd``, the smallest per model);
2. the same models with the entropy codecs too (``ans`` / ``ans_ctx``, :mod:`models.entropy`);
3. a learned bottleneck at the cut (:mod:`models.bottleneck`; the smaller of ``ans`` with its learned prior and
   ``ans_ctx`` fitted on its latent - both are options of the search and deployable);
4. the coded image (JPEG, WebP at j = 0).

    python benchmarks/rate_accuracy.py [--partitions 1 2 3 4 5] [--bits 1 2 4] [--keep 1.0 0.25]
        [--qualities 5 10 20 30 50 80] [--bottleneck-csv docs/results/bottleneck.csv ...]
        [--out docs/results/rate_accuracy.csv] [--reuse] [--final] [hydra overrides]

Every point goes through :func:`objectives.objective.measure` as in a study, fine-tuned with the search's budget
(``train.finetune``, ``train.finetune_when=always`` - the coded image's edge model too, on decoded images); bytes
from the real encoders with the 24-byte frame header, mean over ``eval.payload_images`` validation images. The
learned bottlenecks are read from ``benchmarks/bench_bottleneck.py``'s CSV (measured the same way, run with
``train.finetune_when=always``; its baseline mAP must be this one's, or the script stops). Writes
the points (CSV + Markdown), ``docs/rate_accuracy.png`` (each curve the upper envelope of its points: the best
mAP at that many bytes or fewer; the constraint line at baseline - ``study.th``) and prints, per curve, the
smallest payload that meets the constraint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from results import ROOT, default_out, write

from objectives.accuracy import evaluate_map
from objectives.design import DesignPoint, bottleneck_key
from objectives.objective import measure
from search.config import compose
from search.workbench import Workbench, final_training

CURVES = ("quantized cut + zlib/zstd", "quantized cut + entropy coding", "learned bottleneck", "coded image")
LOSSLESS, ENTROPY = ("none", "zlib", "zstd"), ("ans", "ans_ctx")


def envelope(df: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats with fewer or equal bytes and a higher mAP, by bytes."""
    df = df.sort_values(["payload_B", "mAP50"], ascending=[True, False])
    return df[df["mAP50"] > df["mAP50"].cummax().shift(fill_value=-1.0)]


def figure(rows: pd.DataFrame, required: float, baseline: float, pixels: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, (curve, marker) in enumerate(zip(CURVES, "osDv", strict=True)):
        d = rows[rows["curve"] == curve]
        if d.empty:
            continue
        color = f"C{i}"  # one colour per curve in every figure, whichever curves a run measured
        env = envelope(d)
        ax.plot(env["payload_B"], env["mAP50"], drawstyle="steps-post", label=curve, color=color)
        ax.scatter(d["payload_B"], d["mAP50"], s=14, marker=marker, color=color, alpha=0.55)
    ax.axhline(required, color="grey", ls="--", lw=0.8)
    ax.text(rows["payload_B"].min(), required + 0.01,
            f"constraint: baseline {baseline:.3f} - th", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("payload per image [bytes, frame header included]")
    ax.set_ylabel("mAP@0.5 (validation set)")
    sec = ax.secondary_xaxis("top", functions=(lambda b: 8 * b / pixels, lambda bpp: bpp * pixels / 8))
    sec.set_xlabel("bits per input pixel")
    ax.set_ylim(max(0.0, rows["mAP50"].min() - 0.05), min(1.0, baseline + 0.05))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--bits", nargs="*", type=int, default=[1, 2, 4])
    ap.add_argument("--keep", nargs="*", type=float, default=[1.0, 0.25])
    ap.add_argument("--qualities", nargs="*", type=int, default=[5, 10, 20, 30, 50, 80])
    ap.add_argument("--bottleneck-csv", type=Path, nargs="*", default=[ROOT / "docs" / "results" / "bottleneck.csv"])
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "rate_accuracy.png")
    ap.add_argument("--reuse", action="store_true", help="keep --out's measured points, re-read the bottlenecks")
    ap.add_argument("--final", action="store_true", help="the final training's budgets (mode=finalize) for every "
                    "point; pair with bench_bottleneck.py --final's CSV")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    rc = compose(["progress=false", "train.finetune_when=always", *args.overrides])
    wb = Workbench(rc)
    base = wb.baseline.model
    ref = evaluate_map(base, wb.val, base.cfg.head(), base.cfg.input_size, rc.eval.conf_threshold, rc.eval.nms_iou,
                       wb.device)
    train = final_training(rc.train) if args.final else rc.train
    settings, _ = wb.measuring(ref.map50, train, codecs={"zstd", "ans", "ans_ctx"})
    required = ref.map50 - rc.study.th
    print(f"{wb.model_name}: baseline mAP@0.5 {ref.map50:.4f}, constraint {required:.4f}", flush=True)
    points = [(CURVES[3], DesignPoint(0, image_codec=c, quality=q)) for c in ("jpeg", "webp") for q in args.qualities]
    points += [(CURVES[0], DesignPoint(j, b, k)) for j in args.partitions for b in args.bits for k in args.keep]
    rows = []
    if args.reuse:  # the measured points of an earlier run with this baseline; only the bottlenecks are read anew
        old = pd.read_csv(args.out)
        rows = old[old["curve"] != CURVES[2]].drop(columns=["bits_per_pixel"]).to_dict("records")
        if not (abs(old["baseline_mAP50"] - ref.map50) < 1e-9).all():
            raise SystemExit(f"--reuse: {args.out} was measured on another baseline")
        points = []
    for curve, p in points:
        t0 = time.time()
        acc = measure(p, base, wb.train, wb.val, settings, wb.device).result
        sizes = acc.payload_mean_bytes
        common = {"key": acc.key, "mAP50": acc.map50, "baseline_mAP50": ref.map50,
                  "finetune_steps": acc.finetune_steps, "bottleneck_steps": acc.bottleneck_steps,
                  "seconds": round(time.time() - t0, 1)}
        if curve == CURVES[0]:  # one model, two curves: without and with the entropy codecs
            for name, codecs in ((CURVES[0], LOSSLESS), (CURVES[1], LOSSLESS + ENTROPY)):
                best = min(codecs, key=sizes.get)
                rows.append({"curve": name, **common, "codec": best, "payload_B": sizes[best]})
        else:  # the image file, framed
            rows.append({"curve": curve, **common, "codec": "none", "payload_B": sizes["none"]})
        print(f"{curve}: {acc.key}: mAP@0.5 {acc.map50:.4f}, {rows[-1]['payload_B']:.0f} B, {common['seconds']} s",
              flush=True)
    learned = pd.concat([pd.read_csv(p) for p in args.bottleneck_csv], ignore_index=True)
    if not (abs(learned["baseline_mAP50"] - ref.map50) < 1e-9).all():
        raise SystemExit(f"{[str(p) for p in args.bottleneck_csv]}: measured on a baseline of mAP@0.5 "
                         f"{learned['baseline_mAP50'].iloc[0]:.4f}, this one has {ref.map50:.4f}: rerun "
                         f"benchmarks/bench_bottleneck.py train.finetune_when=always")
    if not (learned["finetune_steps"] == train.finetune.steps).all():
        steps = sorted(set(learned["finetune_steps"]))
        raise SystemExit(f"{[str(p) for p in args.bottleneck_csv]}: fine-tuned {steps} steps, this run "
                         f"{train.finetune.steps}: every curve gets the same adaptation budget "
                         "(bench_bottleneck.py --final pairs with --final)")
    rows += [{"curve": CURVES[2], "key": bottleneck_key(int(r.j), int(r.latent), r["lambda"]), "mAP50": r.mAP50,
              "baseline_mAP50": r.baseline_mAP50, "finetune_steps": r.finetune_steps,
              "bottleneck_steps": r.bottleneck_steps, "seconds": r.seconds,
              "codec": (c := min(ENTROPY, key=lambda n: r[f"{n}_B"])), "payload_B": r[f"{c}_B"]}
             for _, r in learned.iterrows()]
    df = pd.DataFrame(rows)
    pixels = base.cfg.input_size ** 2
    df.insert(df.columns.get_loc("payload_B") + 1, "bits_per_pixel", 8 * df["payload_B"] / pixels)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure(df, required, ref.map50, pixels, args.figure)
    lines = []
    for curve in CURVES:
        ok = df[(df["curve"] == curve) & (df["mAP50"] >= required)]
        if not (df["curve"] == curve).any():
            lines.append(f"{curve}: not measured in this run")
        elif len(ok):
            best = ok.loc[ok["payload_B"].idxmin()]
            lines.append(f"{curve}: {best['payload_B']:.0f} B ({best['key']}, {best['codec']}, mAP@0.5 "
                         f"{best['mAP50']:.3f})")
        else:
            lines.append(f"{curve}: no measured point meets the constraint")
    print(write(df, args.out, "Rate-accuracy: four ways to send what the edge needs",
                f"{wb.model_name}, baseline mAP@0.5 {ref.map50:.4f}, constraint {required:.4f}; fine-tuning "
                f"{train.finetune.steps} steps for every model, bottlenecks {train.bottleneck.steps} "
                f"training steps first. Smallest payload meeting the constraint - " + "; ".join(lines)))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
