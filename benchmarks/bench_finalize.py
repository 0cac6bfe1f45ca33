"""Benchmark: the final training of a study's front (mode=finalize) and its agreement with the search.

    python benchmarks/bench_finalize.py [hydra overrides]
    e.g. (after `python -m search`): python benchmarks/bench_finalize.py
         another budget: ... train.final.steps=600 (a model finalized with other settings is trained again)

Runs ``mode=finalize`` on the configured study (default: study=energy_latency; its baseline and data are reused
from studies/cache/), then prints: time per finalized model, search-time vs final mAP@0.5 per model, Kendall's
tau, the mean absolute change, the models whose feasibility changed, and the best feasible split at the paper's
threshold (th = 0.05) after finalization with its Table I ratios. Writes the per-model table (search-time vs
final mAP@0.5) as CSV and Markdown (``--out=PATH``, default docs/results/finalize.csv).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from results import default_out, write

from models import cut_points
from search.config import compose
from search.export import final_frame, study_frames, trial_row
from search.outputs import view
from search.report_data import PAPER_TH, report_data
from search.run import run
from search.space import param_columns
from search.storage import make_storage
from search.workbench import model_config


def main() -> None:
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("--out=")]
    out = next((Path(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--out=")), default_out(__file__))
    rc = compose(["mode=finalize", "progress=false", *overrides])
    t0 = time.time()
    res = run(rc)
    wall = time.time() - t0
    storage, _ = make_storage(rc.storage, rc.study.name, Path(rc.studies_dir))
    v = view(rc, res.study, storage)
    columns = param_columns(cut_points(model_config(rc, 1)))
    rows, front = study_frames(v, columns)
    finals = final_frame(v, columns)
    pool = pd.DataFrame([trial_row(t, columns) for t in v.pool])
    d = report_data(rows, v.study.user_attrs.get("node_j", 6), finals, pool, rc.study.th)
    per, a = d["final"], d["agreement"]
    print(f"\nfinalize wall {wall:.0f} s (train.final: {rc.train.final.steps} steps, epochs {rc.train.final.epochs:g}; "
          f"finalize.margin {rc.finalize.margin}, max_points {rc.finalize.max_points})")
    trained = per[per["finetune_steps"] > 0]["finetune_seconds"]
    print(f"models finalized: {a.n}; fine-tuning per model (split points): median {trained.median():.0f} s")
    table = per[["accuracy_key", "mAP50_search", "mAP50_final", "change", "feasibility", "finetune_steps",
                 "finetune_seconds"]]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    write(table, out, "Final training of the front: search-time vs final mAP@0.5",
          f"finalize wall {wall:.0f} s; train.final {rc.train.final.steps} steps; Kendall tau {a.kendall_tau:.3f}, "
          f"mean |change| {a.mean_abs_change:.4f}")
    print(f"Kendall tau {a.kendall_tau:.3f}; mean |change| {a.mean_abs_change:.4f}; mean change {a.mean_change:+.4f}; "
          f"now feasible {list(a.became_feasible)}; now infeasible {list(a.became_infeasible)}")
    print(f"\nfront at th={rc.study.th:g} ({v.fidelity} numbers):")
    print(front[["trial", "j", "bits", "keep_cut", "radio", "codec", "mAP50", "mAP50_search", "fidelity",
                 "payload_bytes", "node_energy_mJ", "latency_ms"]].to_string(index=False))
    print(f"\nTable I ({d['table_note']}):")
    print(d["table1"].to_string(index=False))
    best = d["table1"][d["table1"]["case"] == "with pruning"]
    if len(best):
        print(f"best feasible split at th={d['table_th']:g}: {best['best energy point'].iloc[0]}")
    feas = pool[(pool["j"].between(1, v.study.user_attrs.get("node_j", 6) - 1)) & pool["platform_feasible"].astype(bool)
                & (pool["mAP50"] >= pool["baseline_mAP50"] - PAPER_TH)]
    if len(feas):
        b = feas.sort_values("node_energy_mJ").iloc[0]
        print(f"  j={int(b['j'])}, {int(b['bits'])} bits, cut {b['cut_shape']}, mAP@0.5 {b['mAP50']:.4f} "
              f"({b['fidelity']}), payload {int(b['payload_bytes'])} B, {b['node_energy_mJ']:.3f} mJ, "
              f"{b['radio']}/{b['codec']}")


if __name__ == "__main__":
    main()
