"""Benchmark: mAP before and after fine-tuning for several (j, bits, channels kept) points, with time.

    python tests/benchmarks/bench_finetune.py [--steps 60] [--points default]

Uses the cached baseline of the default config (run bench_baseline.py or the study first).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models.split import CUT_CONV
from objectives.design import DesignPoint
from objectives.objective import EvalSettings, evaluate_accuracy
from objectives.train import DistillConfig, TrainConfig, resolve_device
from search.run import load_data, run_config_from_overrides


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=[60])
    ap.add_argument("--feature-weight", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--only", type=int, nargs="*", help="indices of the points to run (default: all)")
    args = ap.parse_args()
    rc = run_config_from_overrides([])
    dev = resolve_device(rc.device)
    cache = Path(rc.studies_dir) / "cache"
    train, val, key = load_data(rc, cache)
    from models import TinyYOLOv3Config
    from objectives.train import train_baseline

    mcfg = TinyYOLOv3Config(num_classes=1, input_size=rc.data.size, width=rc.model.width)
    base = train_baseline(mcfg, train, key, rc.train.baseline, cache, dev, progress=False)
    print(f"baseline cached={base.cached}", flush=True)
    points = [DesignPoint(j, 1, 1 / 1024, ()) for j in range(1, 6)]  # 1 bit, 1 channel kept at the cut
    points += [DesignPoint(4, 1, 1.0, ((0, 1.0), (2, 1.0), (4, 1.0))),  # 1 bit, all channels
               DesignPoint(3, 1, 8 / 64, ((0, 0.5), (2, 0.5))),          # 1 bit, 8 of 64, earlier layers halved
               DesignPoint(2, 2, 4 / 32, ((0, 0.5),)),                   # 2 bits, 4 of 32
               DesignPoint(5, 1, 16 / 256, ((0, 0.5), (2, 0.5), (4, 0.5), (6, 0.5)))]
    if args.only:
        points = [points[i] for i in args.only]
    for steps in args.steps:
        ft = TrainConfig(epochs=0.0, steps=steps, batch_size=32, lr=args.lr, warmup_epochs=0.0, ema_decay=0.99,
                         amp="bf16")
        s = EvalSettings(codecs=("none", "zlib", "zstd"), finetune=ft,
                         distill=DistillConfig(output_weight=1.0, feature_weight=args.feature_weight))
        for p in points:
            t = time.time()
            acc = evaluate_accuracy(p, base.model, train, val, s, dev)
            print(f"steps={steps:4d} j={p.j} b={p.bits} cut conv {CUT_CONV[p.j]} kept {acc.cut_shape[0]:3d} ch "
                  f"earlier={dict(p.layer_keep)}: mAP@0.5 {acc.map50_before_finetune:.3f} -> {acc.map50:.3f} "
                  f"(fine-tune {acc.finetune_seconds:.0f} s, trial {time.time() - t:.0f} s), node {acc.node_macs / 1e6:.1f} "
                  f"MMAC, payload zlib {acc.payload_mean_bytes['zlib']:.0f} B (best {acc.best_codec})", flush=True)
    torch.set_num_threads(torch.get_num_threads())


if __name__ == "__main__":
    main()
