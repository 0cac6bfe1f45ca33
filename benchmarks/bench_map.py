"""Benchmark: objectives.metrics.average_precision against pycocotools on the same detections.

    python benchmarks/bench_map.py [--images 400] [--dets 100] [--out docs/results/map.csv]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from results import default_out, write  # benchmarks/results.py (this folder)

from objectives.metrics import average_precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(args.images):
        m = rng.integers(0, 5)
        xy = rng.uniform(0, 130, (m, 2))
        g = np.c_[xy, xy + rng.uniform(8, 40, (m, 2)), np.zeros(m)]
        n = args.dets
        dxy = rng.uniform(0, 130, (n, 2))
        d = np.c_[dxy, dxy + rng.uniform(8, 40, (n, 2)), rng.random(n), np.zeros(n)]
        d[: len(g), :4] = g[:, :4] + rng.normal(0, 2, (len(g), 4))
        gts.append(g)
        dets.append(d)
    t = time.perf_counter()
    ours = average_precision(dets, gts, 1)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i + 1} for i in range(len(gts))], "categories": [{"id": 1, "name": "f"}],
                        "annotations": [{"id": k + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                         "area": (b[2] - b[0]) * (b[3] - b[1])}
                                        for k, (i, b) in enumerate((i, b) for i, g in enumerate(gts) for b in g)]}
        coco.createIndex()
        res = coco.loadRes([{"image_id": i + 1, "category_id": 1, "score": float(b[4]),
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, d in enumerate(dets) for b in d])
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    t_coco = time.perf_counter() - t
    print(f"{args.images} images x {args.dets} detections: ours {t_ours:.2f} s (mAP50 {ours.map50:.6f}, "
          f"mAP50-95 {ours.map50_95:.6f}); pycocotools {t_coco:.2f} s (mAP50 {ev.stats[1]:.6f}, "
          f"mAP50-95 {ev.stats[0]:.6f}); speed ratio {t_coco / t_ours:.2f}x")
    write([{"images": args.images, "detections_per_image": args.dets, "ours_s": t_ours, "ours_mAP50": ours.map50,
            "ours_mAP50_95": ours.map50_95, "pycocotools_s": t_coco, "pycocotools_mAP50": float(ev.stats[1]),
            "pycocotools_mAP50_95": float(ev.stats[0])}], args.out,
          "objectives.metrics.average_precision against pycocotools", "the same random detections")


if __name__ == "__main__":
    main()
