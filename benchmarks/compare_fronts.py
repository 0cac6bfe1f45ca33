"""Benchmark: are two runs of a study equally good? The feasible fronts of two studies side by side, and their
hypervolumes against one fixed reference point (Optuna's hypervolume, search/convergence.py).

    python benchmarks/compare_fronts.py BEFORE.db AFTER.db [--study energy_latency] [--ref MJ MS]

Each argument is a storage URL or the path of a SQLite file. Feasibility is each study's own (its constraint
mAP@0.5 >= its baseline - th, as stored); the reference point is 1.1 x the worst feasible energy and latency of the
two studies together unless ``--ref`` fixes it. Prints, per study: baseline mAP, evaluations, feasible trials,
the front (model, radio, codec, bytes, mAP, mJ, ms) and the hypervolume after 10, 20, 30, 40 ...
model evaluations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from results import default_out, write

from search.convergence import feasible, history, hypervolume, reference_point
from search.record import StudyRecord, TrialRecord
from search.view import pareto_front


def url_of(arg: str) -> str:
    return arg if "://" in arg else f"sqlite:///{arg}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("studies", nargs=2, help="storage URLs or SQLite files: before, after")
    ap.add_argument("--study", default="energy_latency")
    ap.add_argument("--ref", type=float, nargs=2, metavar=("MJ", "MS"), help="reference point (default: see above)")
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    runs = {}
    for arg in args.studies:
        study = optuna.load_study(study_name=args.study, storage=url_of(arg))
        runs[arg] = (study, study.get_trials(deepcopy=False))
    ref = tuple(args.ref) if args.ref else reference_point([t for _, ts in runs.values() for t in ts])
    print(f"reference point: {ref[0]:.3f} mJ, {ref[1]:.2f} ms (log10 mJ x log10 ms hypervolume)")
    rows = []
    for arg, (study, trials) in runs.items():
        rec = StudyRecord.of(study)
        hist = history(trials, ref)
        ok = [t for t in trials if feasible(t)]
        print(f"\n{arg}: baseline mAP@0.5 {rec.baseline_mAP50}, {len(hist)} evaluations, {len(trials)} trials, "
              f"{len(ok)} feasible; hypervolume {hypervolume(trials, ref):.4f}; after "
              + ", ".join(f"{n}: {hist[n - 1]:.4f}" for n in range(10, len(hist) + 1, 10)))
        for t in sorted(pareto_front(ok), key=lambda t: t.values[0]):
            r = TrialRecord.from_trial(t)
            print(f"  {r.accuracy_key} {r.radio}/{r.codec}: {r.payload_bytes} B, mAP@0.5 {r.mAP50:.4f}, "
                  f"{t.values[0]:.3f} mJ, {t.values[1]:.2f} ms")
            rows.append({"study": arg, "evaluations": len(hist), "hypervolume": hypervolume(trials, ref),
                         "point": r.accuracy_key, "radio": r.radio, "codec": r.codec, "payload_B": r.payload_bytes,
                         "mAP50": r.mAP50, "node_mJ": t.values[0], "latency_ms": t.values[1]})
    write(rows, args.out, "Two studies' fronts", f"reference point {ref[0]:.3f} mJ, {ref[1]:.2f} ms (log10 x log10)")


if __name__ == "__main__":
    main()
