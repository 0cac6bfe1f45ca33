"""Benchmark: the coded image's rate-accuracy curve on the default study's data and baseline, before and after
fine-tuning the edge model on decoded images, and its node energy per radio.

    python benchmarks/bench_coded_image.py [--out docs/results/coded_image.csv] [hydra overrides]

For each lossy image codec (JPEG, WebP through Pillow) and quality it measures, exactly as a study does
(``objectives.objective.evaluate_accuracy``): the payload bytes per image (the encoder's files + the 24-byte
frame header, mean over ``eval.payload_images``), mAP@0.5 and mAP@[.5:.95] of the unchanged baseline on the decoded
validation images, and the same after the search's fine-tuning (``train.finetune``, the recipe a split gets,
on decoded training images: the fair-adaptation check); then the node energy and latency of the not-fine-tuned
model on every radio of the default space (the node profile's encoder: ``platform.node.image_encoders``).
Writes a CSV and a Markdown table next to it; prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd
from results import markdown  # benchmarks/results.py (this folder)

from objectives.accuracy import evaluate_map
from objectives.design import DesignPoint
from objectives.objective import evaluate_accuracy
from search.config import compose
from search.objective import score
from search.workbench import Workbench, measuring

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = (5, 10, 15, 20, 25, 30, 40, 50, 65, 80, 95)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/coded_image.csv")
    ap.add_argument("--codecs", nargs="*", default=["jpeg", "webp"])
    ap.add_argument("--qualities", nargs="*", type=int, default=list(QUALITIES))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rc = compose(["progress=false", *args.overrides])
    wb = Workbench(rc)
    dev, train, val, base, name = wb.device, wb.train, wb.val, wb.baseline, wb.model_name
    head = base.model.cfg.head()
    b = evaluate_map(base.model, val, head, base.model.cfg.input_size, rc.eval.conf_threshold, rc.eval.nms_iou, dev)
    # as it is (no fine-tuning) and fine-tuned on decoded images with the budget and recipe a split gets
    needed, pricing = measuring(rc, b.map50, rc.train)
    plain = dataclasses.replace(needed, train=dataclasses.replace(rc.train, finetune_enabled=False))
    always = dataclasses.replace(needed, train=dataclasses.replace(rc.train, finetune_when="always"))
    print(f"{name}: baseline mAP@0.5 {b.map50:.4f}, constraint >= {b.map50 - rc.study.th:.4f}; fine-tuning "
          f"{rc.train.finetune.steps} steps; node {rc.platform.node.name}", flush=True)
    rows = []
    for codec in ["raw", *args.codecs]:
        for q in [0] if codec == "raw" else args.qualities:
            p = DesignPoint(0, image_codec=codec, quality=q)
            acc = evaluate_accuracy(p, base.model, train, val, plain, dev)
            tuned = evaluate_accuracy(p, base.model, train, val, always, dev) if codec != "raw" else acc
            r = {"codec": codec, "quality": q if q else "", "payload_B": acc.payload_mean_bytes["none"],
                 "bits_per_pixel": 8 * acc.payload_mean_bytes["none"] / (val.images.shape[1] * val.images.shape[2]),
                 "mAP50": acc.map50, "mAP50_95": acc.map50_95,
                 "mAP50_finetuned": tuned.map50, "mAP50_95_finetuned": tuned.map50_95,
                 "finetune_steps": tuned.finetune_steps, "edge_macs": acc.edge_macs, "height": acc.cut_shape[1],
                 "width": acc.cut_shape[2], "peak_activation_values": acc.peak_activation_values}
            for radio in rc.space.radios:
                s = score(acc, radio, "none", pricing)
                r[f"{radio}_mJ"], r[f"{radio}_ms"] = s.cost.node_energy_mj, s.cost.latency_ms
                r["encode_mJ"] = s.cost.encode_mj
            rows.append(r)
            print(f"{codec:>5} q{q:<3} {r['payload_B']:>8.0f} B {r['bits_per_pixel']:.3f} bit/px  mAP@0.5 "
                  f"{r['mAP50']:.4f} -> fine-tuned {r['mAP50_finetuned']:.4f}  encode {r['encode_mJ']:.3f} mJ",
                  flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    md = args.out.with_suffix(".md")
    md.write_text(f"# Coded image on the default data ({name}; baseline mAP@0.5 {b.map50:.4f}; node "
                  f"{rc.platform.node.name})\n\nWritten by `python benchmarks/bench_coded_image.py`.\n\n"
                  + markdown(df) + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
