"""Benchmark (issue #25): learned bottlenecks at the cut, measured exactly as the search measures a design point.

    python benchmarks/bench_bottleneck.py [--partitions 4 5] [--latent 8 16 32] [--lam 0.002 0.005] [--final]
        [--radios ...] [--out docs/results/bottleneck.csv] [hydra overrides, e.g. train.bottleneck.steps=3000]

For each cut j, latent width k and rate weight lambda the design point ``DesignPoint(j, bottleneck=k,
rate_lambda=lambda)`` goes through :func:`objectives.objective.measure` with the settings the search uses
(``search.workbench.measuring``: the study's constraint, ``train.finetune_when``, every codec of the space):
split, a ``models.bottleneck.BottleneckInterface`` trained by :mod:`objectives.bottleneck` (distillation + lambda x
rate, node and edge frozen, ``train.bottleneck.steps``; ``--final``: ``final_steps`` and the final fine-tuning
budget, as ``mode=finalize``), the fine-tuning where the policy asks for it, mAP@0.5 on the validation set, bytes
from the real coder (the learned prior's ``ans`` tables; framed, 24-byte header) over ``eval.payload_images``
images. Each point is priced with the search's cost model (``search.objective.score``) on every radio of
``--radios`` with the cheapest feasible codec. The coded image to beat is in docs/results/coded_image.md (priced by
the same model there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from results import default_out, write

from objectives.accuracy import evaluate_map
from objectives.design import DesignPoint
from objectives.objective import measure
from search.config import compose
from search.objective import score
from search.workbench import Workbench, final_training


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", nargs="*", type=int, default=[4, 5])
    ap.add_argument("--latent", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--lam", nargs="*", type=float, default=[0.002, 0.005])
    ap.add_argument("--final", action="store_true", help="the final training's budgets (mode=finalize)")
    ap.add_argument("--radios", nargs="*", default=["ble4", "ble5", "lte_c4", "wifi", "lte_m1", "nbiot", "lora"])
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    rc = compose(["progress=false", *args.overrides])
    wb = Workbench(rc)
    base = wb.baseline.model
    ref = evaluate_map(base, wb.val, base.cfg.head(), base.cfg.input_size, rc.eval.conf_threshold, rc.eval.nms_iou,
                       wb.device)
    train = final_training(rc.train) if args.final else rc.train
    settings, pricing = wb.measuring(ref.map50, train, radios=set(args.radios), codecs={"ans", "ans_ctx"})
    print(f"{wb.model_name}: baseline mAP@0.5 {ref.map50:.4f}, constraint {settings.required_map50:.4f}", flush=True)
    rows = []
    for j in args.partitions:
        for k in args.latent:
            for lam in args.lam:
                t0 = time.time()
                acc = measure(DesignPoint(j, bottleneck=k, rate_lambda=lam), base, wb.train, wb.val, settings,
                              wb.device).result
                c, h, w = acc.cut_shape
                ans = acc.payload_mean_bytes["ans"]
                row = {"j": j, "latent": k, "lambda": lam, "bottleneck_steps": acc.bottleneck_steps,
                       "bottleneck_s": round(acc.bottleneck_seconds, 1), "finetune_steps": acc.finetune_steps,
                       "mAP50": acc.map50, "mAP50_before_finetune": acc.map50_before_finetune,
                       "baseline_mAP50": ref.map50, **{f"{n}_B": b for n, b in acc.payload_mean_bytes.items()},
                       "ans_bits_per_position": 8 * (ans - 24) / (h * w), "node_MMAC": acc.node_macs / 1e6,
                       "seconds": round(time.time() - t0, 1)}
                for radio in args.radios:
                    costs = [score(acc, radio, codec, pricing).cost for codec in pricing.codecs]
                    ok = [cst.node_energy_mj for cst in costs if cst.feasible]
                    row[f"{radio}_mJ"] = min(ok) if ok else float("nan")
                rows.append(row)
                print(f"j={j} k={k} lambda={lam}: mAP@0.5 {acc.map50:.4f}, ans {ans:.0f} B, "
                      f"{row['seconds']:.0f} s", flush=True)
    budget = "final budgets (--final)" if args.final else "the search's budgets"
    print(write(rows, args.out, f"Learned bottlenecks at the cut, measured as the search does ({budget})",
                f"{wb.model_name}, baseline mAP@0.5 {ref.map50:.4f}; train.bottleneck.steps="
                f"{train.bottleneck.steps}, fine-tuning {train.finetune.steps} steps where "
                f"train.finetune_when={train.finetune_when} asks"))


if __name__ == "__main__":
    main()
