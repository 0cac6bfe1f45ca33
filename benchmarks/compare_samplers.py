"""Compare samplers on the design table: hypervolume of the feasible front vs model evaluations, many seeds.

    python benchmarks/compare_samplers.py [--seeds 20] [--budgets 10 20 40 80] [--samplers random tpe ...]
        [--table benchmarks/tables/energy_latency.csv] [--out studies/compare_samplers] [--append]
        [--plot docs/samplers.png] [hydra overrides]

Each (sampler, seed) runs one study of max(budgets) evaluations through the search code itself (the Objective with
its sibling trials, the drivers, the stop callback; an in-memory storage), with every design point answered from
the design table (``study=table_benchmark``, objectives/table.py); the value at a smaller budget is that study
after its first ``budget`` evaluations (every sampler here decides trial n from trials < n only, so this equals a
study stopped at ``budget``). As in the default study, the unpruned anchors are enqueued first
(``study.enqueue_baselines``) for every sampler but the paper's protocol, which is one fixed order (its seeds
coincide).

Metric: hypervolume (search.convergence: Optuna's, on log10 mJ x log10 ms) of the feasible front found, divided by
that of the exhaustive front of the whole table (every grid row x radio x codec), against one fixed reference
point (10 % beyond the worst feasible energy and latency of the whole table); and how many of the exhaustive
front's points were found. Writes ``results.csv`` (one row per sampler, seed, budget) and a summary table; with
``--plot``, a PNG of the median and interquartile range of the normalized hypervolume vs evaluations (matplotlib).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd

from search.compare import SAMPLERS, Exhaustive, overrides, run_one, summarize
from search.config import compose
from search.design_table import load_design_table
from search.workbench import measuring


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--out", type=Path, default=Path("studies/compare_samplers"))
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--append", action="store_true", help="keep the other samplers' rows of an earlier results.csv")
    ap.add_argument("--table", default="benchmarks/tables/energy_latency.csv")
    ap.add_argument("--summarize", action="store_true", help="only summarize (and --plot) the existing results.csv")
    ap.add_argument("overrides", nargs="*", help="hydra overrides (after study=table_benchmark)")
    args = ap.parse_args()
    if args.summarize:
        df = pd.read_csv(args.out / "results.csv")
        print(summarize(df).to_string(index=False))
        if args.plot:
            plot(df, args.plot, 262 if "grid" not in df else int(df.grid.iloc[0]))
        return
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base = ["study=table_benchmark", f"table={args.table}", "progress=false", *args.overrides]
    base_rc = compose(base)
    design = load_design_table(base_rc)
    settings, pricing = measuring(base_rc, design.baseline_map50, base_rc.train)
    ex = Exhaustive.of(base_rc, design, pricing)
    n_grid = len(design.results)
    print(f"design table {base_rc.table}: {n_grid} models x {len(base_rc.space.radios)} radios x "
          f"{len(base_rc.space.codecs)} codecs = {len(ex.trials)} points; baseline mAP@0.5 "
          f"{design.baseline_map50:.4f}, th {base_rc.study.th}; exhaustive feasible front {len(ex.front)} points, "
          f"hypervolume {ex.hv:.4f} (log10 mJ x log10 ms, reference {ex.reference[0]:.4g} mJ, "
          f"{ex.reference[1]:.4g} ms)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.samplers:
        seeds = range(1) if SAMPLERS[name][1] == "paper" else range(args.seeds)
        t0 = time.time()
        for seed in seeds:
            rc = compose([*base, *overrides(name, seed, max(args.budgets))])
            design.snapped = design.outside = 0
            trials = run_one(rc, design, pricing, settings.codecs)
            for r in ex.score(trials, args.budgets):
                rows.append({"sampler": name, "seed": seed, **r, "snapped": design.snapped,
                             "outside": design.outside, "grid": n_grid})
        print(f"{name}: {len(seeds)} seeds in {time.time() - t0:.0f} s ({(time.time() - t0) / len(seeds):.1f} s a "
              f"study of {max(args.budgets)} evaluations)", flush=True)
    df = pd.DataFrame(rows)
    if args.append and (args.out / "results.csv").is_file():
        old = pd.read_csv(args.out / "results.csv")
        df = pd.concat([old[~old.sampler.isin(args.samplers)], df], ignore_index=True)
    df.to_csv(args.out / "results.csv", index=False)
    summary = summarize(df)
    summary.to_csv(args.out / "summary.csv", index=False)
    print(summary.to_string(index=False))
    if args.plot:
        plot(df, args.plot, n_grid)


def plot(df: pd.DataFrame, path: Path, n_grid: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, g in df.groupby("sampler", sort=False):
        s = g.groupby("budget").hv
        med, q1, q3 = s.median(), s.quantile(0.25), s.quantile(0.75)
        ax.plot(med.index, med.values, marker="x" if name == "tpe_cl" else "o", ls="--" if name == "tpe_cl" else "-",
                label=name)
        ax.fill_between(med.index, q1.values, q3.values, alpha=0.15)
    ax.axhline(0.95, color="grey", ls="--", lw=0.8)
    ax.axvline(n_grid / 5, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    budgets = sorted(df.budget.unique())
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel(f"model evaluations (grid: {n_grid}; dotted: 1/5 of it)")
    ax.set_ylabel("hypervolume / exhaustive front's")
    ax.set_title("Feasible-front hypervolume vs evaluations (median, IQR over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
