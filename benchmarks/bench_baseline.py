"""Benchmark: generate the embedded dataset and train the baseline from scratch; print time and mAP.

    python benchmarks/bench_baseline.py [--epochs 26] [--minutes 10] [--cache studies/cache]
        [--out docs/results/baseline.csv]

Prints and writes (CSV and Markdown): dataset generation seconds, training seconds, mAP@0.5 and mAP@[.5:.95] on
val.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from results import default_out, write

from models import TinyYOLOv3Config
from objectives.accuracy import evaluate_map
from objectives.baseline import train_baseline
from objectives.data.synthetic import SyntheticConfig, cached
from objectives.device import resolve_device
from search.config import compose


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=26)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--amp", default="bf16")
    ap.add_argument("--cache", type=Path, default=Path("studies/cache"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rc = compose()
    d, ev = rc.data, rc.eval
    dcfg = SyntheticConfig(size=d.size, n_train=d.n_train, n_val=d.n_val, seed=d.seed)
    t = time.time()
    train, val = cached(dcfg, args.cache)
    data_s = time.time() - t
    print(f"data: {len(train)} train / {len(val)} val in {time.time() - t:.1f} s (cached or generated)", flush=True)
    mcfg = TinyYOLOv3Config(num_classes=1, input_size=dcfg.size)
    tcfg = replace(rc.train.baseline, epochs=float(args.epochs), batch_size=args.batch, lr=args.lr, amp=args.amp,
                   max_minutes=float(args.minutes))
    res = train_baseline(mcfg, train, dcfg.key(), tcfg, args.cache, dev, progress=False)
    t = time.time()
    r = evaluate_map(res.model, val, res.model.cfg.head(), dcfg.size, ev.conf_threshold, ev.nms_iou, device=dev)
    print(f"baseline: trained in {res.seconds:.0f} s (cached={res.cached}) on {dev}, "
          f"mAP@0.5={r.map50:.4f} mAP@[.5:.95]={r.map50_95:.4f} (eval {time.time() - t:.1f} s), "
          f"anchors={res.model.cfg.anchors}", flush=True)
    write([{"device": str(dev), "data_s": data_s, "train_s": res.seconds, "cached": res.cached,
            "epochs_asked": args.epochs, "max_minutes": args.minutes, "mAP50": r.map50, "mAP50_95": r.map50_95,
            "anchors": str(res.model.cfg.anchors)}], args.out, "The baseline trained from scratch",
          f"{len(train)} train / {len(val)} val synthetic images")


if __name__ == "__main__":
    main()
