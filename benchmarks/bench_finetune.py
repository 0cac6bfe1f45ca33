"""Benchmark: mAP before and after fine-tuning for several (j, bits, channels kept) points, with time.

    python benchmarks/bench_finetune.py [hydra overrides] [--only 0 5] [--out docs/results/finetune.csv]
    e.g. train.finetune.steps=120, or the plain recipe: train.adapt.adapt_lr_scale=1 train.adapt.freeze_bn=false
    train.adapt.bn_recalib_batches=0 (overrides after --only need a "--" before them)

Fine-tuning runs with the config's train.finetune / train.adapt / train.distill sections (the study's own
recipe); it uses the cached baseline of that config (run bench_baseline.py or the study first).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from results import default_out, write

from models import cut_points
from objectives.design import DesignPoint
from objectives.objective import EvalSettings, evaluate_accuracy
from search.config import compose
from search.workbench import Workbench

POINTS = [DesignPoint(j, 1, 1 / 1024, ()) for j in range(1, 6)] + [  # 1 bit, 1 channel kept at the cut
    DesignPoint(4, 1, 1.0, ()),                                          # 1 bit, all channels
    DesignPoint(3, 1, 8 / 64, ((0, 0.5), (2, 0.5))),                     # 1 bit, 8 of 64, earlier layers halved
    DesignPoint(2, 2, 4 / 32, ((0, 0.5),)),                              # 2 bits, 4 of 32
    DesignPoint(5, 1, 16 / 256, ((0, 0.5), (2, 0.5), (4, 0.5), (6, 0.5))),
    DesignPoint(1, 1, 4 / 16, ()),                                       # 1 bit, 4 of 16
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", type=int, nargs="*", help="indices into POINTS (default: all)")
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    ap.add_argument("overrides", nargs="*", help="hydra overrides of conf/config.yaml")
    args = ap.parse_args()
    rc = compose(args.overrides)
    wb = Workbench(rc)
    dev, train, val, base = wb.device, wb.train, wb.val, wb.baseline
    table = cut_points(base.model.cfg)
    print(f"baseline cached={base.cached}; finetune {rc.train.finetune}; adapt {rc.train.adapt}; "
          f"distill {rc.train.distill}", flush=True)
    s = EvalSettings(replace(rc.eval, before_finetune=True), rc.model, rc.train, ("none", "zlib", "zstd"),
                     measure_edge=False, progress=False)
    rows = []
    for p in [POINTS[i] for i in args.only] if args.only else POINTS:
        t = time.time()
        acc = evaluate_accuracy(p, base.model, train, val, s, dev)
        rows.append({"j": p.j, "bits": p.bits, "cut_conv": table[p.j].conv, "kept_channels": acc.cut_shape[0],
                     "earlier": str(dict(p.layer_keep)), "mAP50_before": acc.map50_before_finetune,
                     "mAP50_after": acc.map50, "finetune_s": acc.finetune_seconds, "steps": acc.finetune_steps,
                     "trial_s": time.time() - t, "node_MMAC": acc.node_macs / 1e6,
                     "zlib_B": acc.payload_mean_bytes["zlib"], "best_codec": acc.best_codec})
        print(f"j={p.j} b={p.bits} cut conv {table[p.j].conv} kept {acc.cut_shape[0]:3d} ch "
              f"earlier={dict(p.layer_keep)}: mAP@0.5 {acc.map50_before_finetune:.3f} -> {acc.map50:.3f} "
              f"(fine-tune {acc.finetune_seconds:.0f} s / {acc.finetune_steps} steps, trial {time.time() - t:.0f} s), "
              f"node {acc.node_macs / 1e6:.1f} MMAC, payload zlib {acc.payload_mean_bytes['zlib']:.0f} B "
              f"(best {acc.best_codec})", flush=True)
    write(rows, args.out, "mAP before and after fine-tuning",
          f"{wb.model_name}; finetune {rc.train.finetune.steps} steps; adapt {rc.train.adapt}")


if __name__ == "__main__":
    main()
