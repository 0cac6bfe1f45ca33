"""Benchmark: run a study from the command line and print its wall time and the run's own figures
(median trial, share of time for the radio x codec siblings, peak RSS).

    python benchmarks/bench_study.py quick                 # study=quick from scratch (target <= 2 min)
    python benchmarks/bench_study.py energy_latency        # default study, baseline cached if present
    python benchmarks/bench_study.py energy_latency --cold # also regenerate data and retrain baseline

Each run uses a fresh studies directory (--dir), so the study itself always starts from zero trials;
--cold also starts without the dataset and baseline caches (else they are linked from studies/cache). The wall
time and the run's summary line are written as CSV and Markdown (--out, default docs/results/study_<name>.csv).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import RESULTS, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("study")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    d = args.dir or Path(tempfile.mkdtemp(prefix="bench-study-"))
    studies = d / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    cache = Path("studies/cache").resolve()
    if not args.cold and cache.is_dir() and not (studies / "cache").exists():
        (studies / "cache").symlink_to(cache)
    t = time.time()
    cmd = [sys.executable, "-m", "search", f"study={args.study}", f"studies_dir={studies}", "progress=false",
           *args.overrides]
    p = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True, capture_output=True)
    wall = time.time() - t
    print(p.stdout[-6000:])
    if p.returncode:
        print(p.stderr[-4000:])
    print(f"BENCH study={args.study} cold={args.cold} rc={p.returncode} wall={wall:.0f} s ({wall / 60:.1f} min)")
    summary = [ln for ln in p.stdout.splitlines() if "evaluations" in ln or "trials" in ln][-1:]
    write([{"study": args.study, "cold": args.cold, "returncode": p.returncode, "wall_s": wall,
            "overrides": " ".join(args.overrides), "summary": summary[0] if summary else ""}],
          args.out or RESULTS / f"study_{args.study}.csv", f"Study {args.study} from the command line")


if __name__ == "__main__":
    main()
