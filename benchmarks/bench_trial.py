"""Benchmark: where a default trial's time goes, phase by phase.

    python benchmarks/bench_trial.py [--out docs/results/trial.csv] [hydra overrides]

Evaluates six design points typical of the default study (its data, model, fine-tuning and eval settings; the
cached baseline of that config, trained first if missing) and prints, per point and as the median over the split
points, the wall time of each phase that ``objectives.objective.evaluate_accuracy`` records
(``AccuracyResult.phase_seconds``): calibrate (split + Eq. 5 calibration), prune (step 1 + 2 and re-calibration),
finetune (AdaBN + the fine-tuning steps), evaluate (mAP on the validation set), payload (encoding the
validation payloads per codec), macs_memory (MACs, weights, peak activation); then siblings (pricing the model on
every radio x codec of the space, without the storage writes, which the study's summary line reports). With
``train.finetune_when=needed`` (the default) a point that meets the constraint as split (baseline 0.93 - study.th)
is not fine-tuned; ``train.finetune_when=always`` times every point fine-tuned. Writes the table as CSV and
Markdown (``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from results import default_out, write

from models import cut_points
from objectives.design import DesignPoint
from objectives.objective import evaluate_accuracy
from search.config import compose
from search.objective import score
from search.workbench import Workbench, measuring

POINTS = [  # from the default study's trials (fresh-clone run, README "Measured figures")
    DesignPoint(1, 4, 0.296205),                                                   # its best-energy point
    DesignPoint(1, 8, 0.20332),
    DesignPoint(2, 2, 0.739401, ((0, 0.865124),)),
    DesignPoint(4, 4, 0.618560, ((0, 0.403255), (2, 0.847578), (4, 0.520172))),
    DesignPoint(5, 8, 1.0, ((0, 1.0), (2, 1.0), (4, 1.0), (6, 1.0))),              # an unpruned anchor
    DesignPoint(0),                                                                # the image
]
PHASES = ("calibrate", "prune", "finetune", "evaluate", "payload", "macs_memory")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rc = compose(["progress=false", *args.overrides])
    wb = Workbench(rc)
    dev, train, val, base = wb.device, wb.train, wb.val, wb.baseline
    s, pricing = measuring(rc, 0.93, rc.train)  # the baseline mAP only moves the constraint, not the time
    algorithms = s.codecs
    table = cut_points(base.model.cfg)
    print(f"device {dev}; baseline cached={base.cached}; finetune {rc.train.finetune.steps} steps; "
          f"{len(val.images)} val images, {rc.eval.payload_images} payload images, codecs {algorithms}", flush=True)
    print(f"constraint mAP@0.5 >= {s.required_map50:.4f} (baseline 0.93 - th {rc.study.th}); train.finetune_when="
          f"{rc.train.finetune_when}", flush=True)
    print(f"{'point':<44} {'total':>6} " + " ".join(f"{p:>11}" for p in PHASES) + f" {'siblings':>9}  fine-tuned")
    rows, out = [], []
    for p in POINTS:
        acc = evaluate_accuracy(p, base.model, train, val, s, dev)
        t = time.perf_counter()
        for radio in rc.space.radios:
            for codec in rc.space.codecs:
                score(acc, radio, codec, pricing)
        sib = time.perf_counter() - t
        ph = {k: acc.phase_seconds.get(k, 0.0) for k in PHASES}
        rows.append((p, acc.seconds, ph, sib, acc.finetune_steps > 0))
        out.append({"point": acc.key, "total_s": acc.seconds, **{f"{k}_s": ph[k] for k in PHASES}, "siblings_s": sib,
                    "finetune_steps": acc.finetune_steps, "finetune_skipped": acc.finetune_skipped})
        print(f"{acc.key[:44]:<44} {acc.seconds:>6.2f} " + " ".join(f"{ph[k]:>11.2f}" for k in PHASES)
              + f" {sib:>9.4f}  {'no: meets it as is' if acc.finetune_skipped else acc.finetune_steps or '-'}",
              flush=True)
    split = [r for r in rows if table[r[0].j].is_split]
    tuned = [r for r in split if r[4]]
    for name, group in ((f"median over the {len(split)} split points", split),
                        (f"median over the {len(tuned)} fine-tuned ones", tuned)):
        if group:
            med = {k: statistics.median(r[2][k] for r in group) for k in PHASES}
            print(f"{name:<44} {statistics.median(r[1] for r in group):>6.2f} "
                  + " ".join(f"{med[k]:>11.2f}" for k in PHASES)
                  + f" {statistics.median(r[3] for r in group):>9.4f}")
            out.append({"point": name, "total_s": statistics.median(r[1] for r in group),
                        **{f"{k}_s": med[k] for k in PHASES}, "siblings_s": statistics.median(r[3] for r in group),
                        "finetune_steps": "", "finetune_skipped": ""})
    write(out, args.out, "Where a default trial's time goes",
          f"{wb.model_name}; device {dev}; codecs {algorithms}; train.finetune_when={rc.train.finetune_when}")


if __name__ == "__main__":
    main()
