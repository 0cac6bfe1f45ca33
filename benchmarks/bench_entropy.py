"""Benchmark: the entropy-coded cut (``ans``, ``ans_ctx``) against the byte compressors on the default study's
baseline, at a grid of design points.

    python benchmarks/bench_entropy.py [--out docs/results/entropy_coding.csv] [hydra overrides]

For each partition j, bit width b and share of the cut's channels kept (step 1, L1; no fine-tuning) it measures
the point exactly as a study does (``objectives.objective.measure``: calibration, pruning, the entropy models
fitted on the ``eval.calib_images`` training images, payloads of ``eval.payload_images`` validation images framed
by the real encoders, header included): bytes and bits per element per codec, the ratio to zlib, the empirical
order-0 entropy of the codes, the tables' size, and the encode / decode time per value of this host's reference
implementation (constriction + numpy) on 8 validation images. Writes a CSV and a Markdown table with the medians
over the points at 1-2 and at 4-8 bits; prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch
from results import markdown  # benchmarks/results.py (this folder)

from models.codec import decode, encode_features
from objectives.design import DesignPoint
from objectives.objective import measure
from search.config import compose
from search.workbench import Workbench, measuring

ROOT = Path(__file__).resolve().parents[1]
CODECS = ("none", "zlib", "zstd", "ans", "ans_ctx")


def timing(sm, images: torch.Tensor, codec: str, repeats: int = 1) -> tuple[float, float]:
    """Encode and decode seconds per value of one codec on ``images`` (the framed payload, as the node and edge do)."""
    iface = sm.interface
    with torch.no_grad():
        codes = iface.quantize(sm.node(images)).cpu()
    model = iface.entropy.get(codec)
    t = time.perf_counter()
    payloads = [encode_features(q, iface.bits, float(iface.mu), float(iface.max), codec, model=model)
                for _ in range(repeats) for q in codes]
    enc = time.perf_counter() - t
    t = time.perf_counter()
    for p in payloads:
        decode(p, models=iface.entropy)
    dec = time.perf_counter() - t
    return enc / codes.numel() / repeats, dec / codes.numel() / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/entropy_coding.csv")
    ap.add_argument("--partitions", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--bits", nargs="*", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--keep", nargs="*", type=float, default=[1.0, 0.25])
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rc = compose(["progress=false", *args.overrides])
    wb = Workbench(rc)
    dev, train, val, base = wb.device, wb.train, wb.val, wb.baseline
    settings, _ = measuring(rc, 0.0, dataclasses.replace(rc.train, finetune_enabled=False), codecs=set(CODECS))
    settings = dataclasses.replace(settings, codecs=CODECS, required_map50=None)
    timed = torch.from_numpy(val.images[:8]).permute(0, 3, 1, 2).float() / 255
    print(f"{wb.model_name}: {rc.eval.calib_images} calibration images fit the tables, {rc.eval.payload_images} "
          f"validation images measured; no fine-tuning", flush=True)
    rows = []
    for j in args.partitions:
        for bits in args.bits:
            for keep in args.keep:
                m = measure(DesignPoint(j, bits, keep), base.model, train, val, settings, dev)
                a = m.result
                if not a.feature_values:
                    continue
                r = {"j": j, "bits": bits, "cut_keep": keep, "channels": a.cut_shape[0],
                     "values": a.feature_values, "mAP50": a.map50,
                     "order0_entropy_B": a.entropy_bytes}
                for c in CODECS:
                    r[f"{c}_B"] = a.payload_mean_bytes[c]
                for c in CODECS:
                    r[f"{c}_bit_per_value"] = 8 * a.payload_mean_bytes[c] / a.feature_values
                for c in ("zstd", "ans", "ans_ctx"):
                    r[f"{c}_vs_zlib"] = a.payload_mean_bytes[c] / a.payload_mean_bytes["zlib"]
                r["ans_ctx_vs_order0"] = (a.payload_mean_bytes["ans_ctx"] - 24) / max(a.entropy_bytes, 1e-9)
                for c in ("ans", "ans_ctx"):
                    r[f"{c}_table_B"] = a.entropy_table_bytes.get(c, 0)
                for c in ("zlib", "ans", "ans_ctx"):
                    enc, dec = timing(m.model.to(dev), timed, c)
                    r[f"{c}_encode_ns_per_value"], r[f"{c}_decode_ns_per_value"] = enc * 1e9, dec * 1e9
                rows.append(r)
                print(f"j={j} b={bits} keep={keep}: zlib {r['zlib_B']:.0f} B, ans {r['ans_B']:.0f}, ans_ctx "
                      f"{r['ans_ctx_B']:.0f} ({r['ans_ctx_vs_zlib']:.3f} x zlib, {r['ans_ctx_bit_per_value']:.3f} "
                      f"bit/value)", flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    low, high = df[df.bits <= 2], df[df.bits >= 4]
    summary = pd.DataFrame([{"bits": name, "points": len(d),
                             **{f"median {c} / zlib": float(d[f"{c}_vs_zlib"].median()) for c in ("zstd", "ans",
                                                                                                  "ans_ctx")},
                             "median ans_ctx / order-0 entropy": float(d["ans_ctx_vs_order0"].median()),
                             "median ans_ctx bit/value": float(d["ans_ctx_bit_per_value"].median())}
                            for name, d in (("1-2", low), ("4-8", high)) if len(d)])
    cols = ["j", "bits", "cut_keep", "channels", "mAP50", "none_B", "zlib_B", "zstd_B", "ans_B", "ans_ctx_B",
            "ans_ctx_bit_per_value", "ans_ctx_vs_zlib", "ans_ctx_vs_order0", "ans_ctx_table_B",
            "ans_ctx_encode_ns_per_value", "ans_ctx_decode_ns_per_value", "zlib_encode_ns_per_value"]
    text = (f"# Entropy-coded cut vs the byte compressors\n\n{wb.model_name}; `python benchmarks/bench_entropy.py`; "
            f"payload bytes per image with the 24-byte header, mean over {rc.eval.payload_images} validation "
            f"images; tables fitted on {rc.eval.calib_images} training images; no fine-tuning.\n\n"
            f"{markdown(summary)}\n\n{markdown(df[cols])}\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
