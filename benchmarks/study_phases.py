"""Benchmark: where a finished study's trial time went, phase by phase, from the study itself.

    python benchmarks/study_phases.py STUDY.db [MORE.db ...] [--study energy_latency]

Each argument is a storage URL or the path of a SQLite file. Every primary trial stores what
``objectives.objective.evaluate_accuracy`` timed (``AccuracyResult.phase_seconds``); this prints, per study, the
median trial and phases over all its primary trials, over those that were fine-tuned and over those that were not
(``train.finetune_when=needed``: the model met the constraint as split), and the total. Unlike bench_trial.py,
the mix of models is the study's own, so the medians are those of a real run (on that run's machine and moment).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import optuna
from results import default_out, write

from search.record import TrialRecord

PHASES = ("calibrate", "prune", "evaluate", "finetune", "payload", "macs_memory")


def url_of(arg: str) -> str:
    return arg if "://" in arg else f"sqlite:///{arg}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("studies", nargs="+", help="storage URLs or SQLite files")
    ap.add_argument("--study", default="energy_latency")
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{'study / trials':<58} {'n':>3} {'median':>7} " + " ".join(f"{p:>11}" for p in PHASES) + f" {'total':>7}")
    rows = []
    for arg in args.studies:
        study = optuna.load_study(study_name=args.study, storage=url_of(arg))
        accs = [r.accuracy for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if (r := TrialRecord.from_trial(t)).is_primary and r.accuracy is not None]
        groups = (("all primaries", accs), ("fine-tuned", [a for a in accs if a.finetune_steps > 0]),
                  ("not fine-tuned (met it as split)", [a for a in accs if a.finetune_skipped]),
                  ("not split (j=0, last j)", [a for a in accs if a.finetune_steps == 0 and not a.finetune_skipped]))
        for name, group in groups:
            if not group:
                continue
            label = f"{arg[-36:]} / {name}"
            print(f"{label:<58} {len(group):>3} {statistics.median(a.seconds for a in group):>7.2f} "
                  + " ".join(f"{statistics.median(a.phase_seconds.get(p, 0.0) for a in group):>11.2f}"
                             for p in PHASES)
                  + f" {sum(a.seconds for a in group):>7.0f}")
            rows.append({"study": arg, "trials": name, "n": len(group),
                         "median_s": statistics.median(a.seconds for a in group),
                         **{f"{p}_s": statistics.median(a.phase_seconds.get(p, 0.0) for a in group) for p in PHASES},
                         "total_s": sum(a.seconds for a in group)})
    write(rows, args.out, "A finished study's phases", "median seconds per model evaluation")


if __name__ == "__main__":
    main()
