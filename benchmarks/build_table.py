"""Build (or resume) the design table: the accuracy part of every grid point measured once (objectives.table).

    python benchmarks/build_table.py [--out benchmarks/tables/energy_latency.csv] [--limit N]
        [--image-codecs jpeg webp] [hydra overrides]

Uses the run configuration (default: the default study's data, model, fine-tuning and eval settings) and its
cached baseline (trained first if missing), exactly as a study measures a point (evaluate_accuracy). Every point
is written to the CSV as soon as it is measured, so a killed run resumes where it stopped; a table measured with
other settings is refused; a table resumed with more ``--image-codecs`` gains their rows (each lossy codec at
objectives.table.GRID_QUALITIES) and keeps the others. The CSV's first line is its provenance (commit, settings,
date, machine, grid, build time so far). Two cores take hours: run it in the background (nohup ... &).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from models.codec import CODECS
from objectives.objective import evaluate_accuracy
from objectives.table import (
    GRID_BITS,
    GRID_COUNTS,
    GRID_LEVELS,
    GRID_QUALITIES,
    grid_points,
    read_csv,
    row_of,
    write_csv,
)
from search import settings
from search.config import compose
from search.workbench import Workbench, measuring

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/tables/energy_latency.csv")
    ap.add_argument("--limit", type=int, default=0, help="measure at most this many new points, then stop")
    ap.add_argument("--image-codecs", nargs="*", default=["jpeg", "webp"],
                    help="lossy image codecs whose coded-image rows (j=0) the table holds")
    ap.add_argument("overrides", nargs="*", help="hydra overrides of conf/config.yaml")
    args = ap.parse_args()
    rc = compose(["progress=false", "train.finetune_when=always", *args.overrides])
    if rc.train.finetune_when != "always":  # a row must not depend on a threshold: every point is fine-tuned
        sys.exit(f"train.finetune_when={rc.train.finetune_when!r}: a design table fine-tunes every point (always)")
    wb = Workbench(rc)
    dev, train, val, base, model_name = wb.device, wb.train, wb.val, wb.baseline, wb.model_name
    settings_repr = wb.settings()
    table = wb.cut
    points = grid_points(table, GRID_BITS, GRID_COUNTS, GRID_LEVELS, criterion=rc.space.criteria[0],
                         image_codecs=args.image_codecs)
    s, _ = measuring(rc, 0.0, rc.train)
    s = replace(s, codecs=tuple(sorted({*s.codecs, *CODECS})), measure_edge=False, progress=False)
    prov = {
        "what": "design table: the accuracy part of every grid point (objectives/table.py), one row each",
        "model": model_name, "num_classes": len(train.class_names), "settings": settings_repr,
        "digest": settings.digest(settings_repr),
        "overrides": list(args.overrides), "device": str(dev), "machine": machine(),
        "grid": {"bits": list(GRID_BITS), "counts_per_cut_conv": GRID_COUNTS, "levels": list(GRID_LEVELS),
                 "criterion": rc.space.criteria[0], "points": len(points),
                 "image_codecs": list(args.image_codecs), "qualities": list(GRID_QUALITIES)},
        "codecs": list(s.codecs),
    }
    rows: list[dict] = []
    if args.out.is_file():
        old, rows = read_csv(args.out)
        diff = settings.difference(old.get("settings"), rc, model_name)
        if diff:
            sys.exit(f"{args.out}: measured with other settings ({diff}); move it away or pass the same overrides")
        settings_repr, prov["settings"], prov["digest"] = old["settings"], old["settings"], old.get("digest")
        prov["started"], prov["commits"] = old["started"], old.get("commits", [])
        prov["build_seconds"] = float(old.get("build_seconds", 0.0))
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        prov["started"], prov["commits"], prov["build_seconds"] = \
            datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), [], 0.0
    commit = git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                                                   else "")
    if commit not in prov["commits"]:
        prov["commits"].append(commit)
    done = {r["key"] for r in rows}
    todo = [p for p in points if p.accuracy_key(table) not in done]
    print(f"{args.out}: {len(done)} of {len(points)} grid points measured; {len(todo)} to go "
          f"({model_name}, baseline cached={base.cached}, {dev})", flush=True)
    for p in todo[:args.limit or None]:
        t = time.time()
        acc = evaluate_accuracy(p, base.model, train, val, s, dev)
        rows.append(row_of(p, acc, table))
        prov["build_seconds"] += time.time() - t
        prov["rows"] = len(rows)
        prov["updated"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_csv(args.out, prov, rows)
        print(f"[{len(rows)}/{len(points)}] {acc.key}: mAP@0.5 {acc.map50:.4f} in {acc.seconds:.1f} s "
              f"(total {prov['build_seconds'] / 3600:.2f} h)", flush=True)
    print(f"{args.out}: {len(rows)} of {len(points)} rows, {args.out.stat().st_size / 1024:.0f} KiB, "
          f"{prov['build_seconds'] / 3600:.2f} h of measuring", flush=True)


if __name__ == "__main__":
    main()
