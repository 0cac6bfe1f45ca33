"""Benchmark: 1, 2 and 4 workers (``workers=N``) on one quick study in a real PostgreSQL server.

    python benchmarks/bench_workers.py [--trials 12] [--steps 40] [--workers 1 2 4]

Prints per N: wall time of the search (data and baseline cached beforehand), model evaluations per minute,
storage round trips (PostgreSQL transactions, pg_stat_database) per evaluation, proposals pruned because
another worker had or was training the same model (duplicates avoided), and the check that no model was trained
twice. On a 2-core machine the speed-up is bounded by the cores: each worker gets cores/N threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results import default_out, write  # noqa: E402 - benchmarks/results.py (this folder)

from search.record import count_primaries, records  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--steps", type=int, default=40, help="train.finetune.steps (the quick study's is 4)")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    common = ["study=quick", "progress=false", f"train.finetune.steps={args.steps}", f"study.n_trials={args.trials}"]
    warm = subprocess.run([sys.executable, "-m", "search", *common, f"studies_dir={tmp / 'warm'}", "study.n_trials=1"],
                          capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr[-2000:]
    print(f"{'workers':>7} {'wall s':>7} {'evals/min':>9} {'tx/eval':>8} {'dup avoided':>11} {'trained twice':>13}")
    rows = []
    with PostgresServer() as pg:
        for n in args.workers:
            db = f"w{n}"
            url = pg.create_db(db)
            studies = tmp / f"n{n}"
            studies.mkdir()
            (studies / "cache").symlink_to(tmp / "warm" / "cache")
            before = pg.transactions(db)
            t = time.time()
            p = subprocess.run([sys.executable, "-m", "search", *common, f"studies_dir={studies}", "storage=postgres",
                                f"workers={n}"], capture_output=True, text=True,
                               env={**os.environ, "SPLITCNN_POSTGRES_URL": url})
            wall = time.time() - t
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
            tx = pg.transactions(db) - before
            study = optuna.load_study(study_name="quick", storage=url)
            recs = records(study)
            evals = count_primaries(study)
            dups = sum(1 for r in recs if r.state == TrialState.PRUNED and r.duplicate_of is not None)
            keys = Counter(r.accuracy_key for r in recs if r.state == TrialState.COMPLETE and r.is_primary)
            twice = sum(c > 1 for c in keys.values())
            print(f"{n:>7} {wall:>7.1f} {60 * evals / wall:>9.1f} {tx / evals:>8.0f} {dups:>11} {twice:>13}",
                  flush=True)
            rows.append({"workers": n, "wall_s": wall, "evals_per_min": 60 * evals / wall, "tx_per_eval": tx / evals,
                         "duplicates_avoided": dups, "trained_twice": twice})
    print(f"cores {os.cpu_count()}; wall includes each worker's start-up (imports, cached data and baseline); "
          f"{args.trials} evaluations of the quick study with {args.steps} fine-tuning steps")
    write(rows, args.out, "Workers on one PostgreSQL study",
          f"{os.cpu_count()} cores; {args.trials} evaluations of the quick study, {args.steps} fine-tuning steps")


if __name__ == "__main__":
    main()
