"""Benchmark: the best split of the exhaustive design table against the measured coded-image curve, priced on
every radio (the search samples few splits once the coded image dominates; the table holds all 262 grid models).

    python benchmarks/split_vs_coded.py [--table benchmarks/tables/energy_latency.csv]
        [--coded docs/results/coded_image.csv] [--out docs/results/split_vs_coded.md] [hydra overrides]

Feasible means mAP@0.5 >= each one's own baseline - study.th (the table's rows were measured with its own baseline
checkpoint, the coded images with the one ``bench_coded_image.py`` used: their provenance lines say which), and the
node platform's limits. Every point is priced with the same cost models (``search.objective.score``) on the node
profile of the run (default cortex_m7: hardware JPEG, software WebP), each on its lowest-energy lossless codec.
Prints and writes a Markdown table per radio: the lowest-energy feasible split and coded image, their bytes, mAP,
node energy and latency, and the ratio (> 1: the split needs less node energy).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from objectives.objective import AccuracyResult
from objectives.table import read_csv, result_of
from search.config import compose
from search.objective import score
from search.profiles import available
from search.workbench import measuring

ROOT = Path(__file__).resolve().parents[1]


def coded_results(path: Path) -> list[tuple[AccuracyResult, float]]:
    """(an AccuracyResult priced like the coded image the bench measured, its baseline mAP@0.5) per CSV row."""
    df = pd.read_csv(path, keep_default_na=False)
    base = float(df.loc[df["codec"] == "raw", "mAP50"].iloc[0])
    out = []
    for r in df[df["codec"] != "raw"].itertuples():
        q = int(r.quality)
        b = float(r.payload_B)
        out.append((AccuracyResult(
            key=f"j=0;img={r.codec};q={q}", j=0, map50=float(r.mAP50), map50_95=float(r.mAP50_95),
            map50_before_finetune=math.nan, node_macs=0, edge_macs=int(r.edge_macs), node_macs_per_layer={},
            cut_shape=[3, int(r.height), int(r.width)], feature_values=0, raw_bytes=math.ceil(b - 24),
            payload_mean_bytes={"none": b}, payload_max_bytes={"none": math.ceil(b)}, entropy_bytes=0.0,
            best_codec="none", weight_count=0, peak_activation_values=int(r.peak_activation_values),
            image_codec=r.codec, quality=q), base))
    return out


def cell(x) -> tuple[str, ...]:
    if x is None:
        return ("none feasible", "-", "-", "-", "-")
    return (f"{x[2].key}/{x[3]}", f"{x[4]}", f"{x[2].map50:.3f}", f"{x[0]:.3g}", f"{x[1]:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", type=Path, default=ROOT / "benchmarks/tables/energy_latency.csv")
    ap.add_argument("--coded", type=Path, default=ROOT / "docs/results/coded_image.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/split_vs_coded.md")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    radios = available("radio")
    rc = compose(["progress=false", f"space.radios=[{','.join(radios)}]", *args.overrides])
    prov, rows = read_csv(args.table)
    table = [result_of(r) for r in rows]
    table_base = next(a.map50 for a in table if a.key == "j=0")
    _, pricing = measuring(rc, table_base, rc.train)
    coded = coded_results(args.coded)
    lines = [f"# Best split of the design table vs the measured coded image, per radio (node {rc.platform.node.name}, "
             f"th {rc.study.th})", "",
             f"Written by `python benchmarks/split_vs_coded.py`. Splits: {args.table.name} ({len(table)} "
             f"models, baseline mAP@0.5 {table_base:.4f}, {prov.get('model')}); coded images: {args.coded.name} "
             f"(baseline mAP@0.5 {coded[0][1]:.4f}). Each point on its lowest-energy lossless codec.", "",
             "| radio | split | split B | split mAP | split mJ | split ms | coded image | coded B | coded mAP | "
             "coded mJ | coded ms | energy ratio coded/split | latency ratio |", "|" + "---|" * 13]
    for radio in radios:
        best = {}
        for kind, items in (("split", [(a, table_base) for a in table if 0 < a.j < 6]), ("coded", coded)):
            cands = []
            for acc, base in items:
                if acc.map50 < base - rc.study.th:
                    continue
                for codec in rc.space.codecs if kind == "split" else ["none"]:  # the files, as the bench measured
                    s = score(acc, radio, codec, pricing)
                    if s.cost.feasible:
                        cands.append((s.values[0], s.values[1], acc, codec, s.record.payload_bytes))
            best[kind] = min(cands, key=lambda c: c[0]) if cands else None
        s, c = best["split"], best["coded"]
        ratio = f"{c[0] / s[0]:.3g}" if s and c else "-"
        lat = f"{c[1] / s[1]:.3g}" if s and c else "-"
        lines.append("| " + " | ".join([radio, *cell(s), *cell(c), ratio, lat]) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
