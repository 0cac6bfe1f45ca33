"""Exports of a study: trials.csv, pareto.csv/json, pareto.html (plotly, self-contained), final.csv (a finalized
study), terminal summary.

Computing the rows (tested) is kept apart from drawing them (thin). Every function takes the study itself (its
stored numbers and constraints) or a :class:`StudyView`: the trials judged at the configured ``study.th`` and,
at ``export.fidelity=final``, the final training's numbers where they exist (:mod:`search.finalize`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from search import versus
from search.record import StudyRecord, TrialRecord
from search.view import StudyView, as_view, pareto_front


def trial_row(t: optuna.trial.FrozenTrial, param_columns: tuple[str, ...]) -> dict[str, Any]:
    """One flat row per trial: parameters, objectives, accuracy, payload, and the cost breakdowns."""
    return TrialRecord.from_trial(t).row(t, param_columns)


def study_frames(study: optuna.Study | StudyView, param_columns: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all trials, feasible Pareto front) as data frames. The front is Optuna's own constraint-aware
    ``best_trials`` (only trials whose constraints are all <= 0) of the view's pool."""
    v = as_view(study)
    all_rows = pd.DataFrame([trial_row(t, param_columns) for t in v.trials])
    front = sorted(pareto_front(v.pool), key=lambda t: (t.values[0], t.values[1]))
    pareto = pd.DataFrame([trial_row(t, param_columns) for t in front])
    return all_rows, pareto


def final_frame(study: optuna.Study | StudyView, param_columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per final trial (``parent``: the search trial it re-trained; ``mAP50_search``: that trial's)."""
    return pd.DataFrame([trial_row(t, param_columns) for t in as_view(study).finals])


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def export_all(study: optuna.Study | StudyView, out_dir: Path, param_columns: tuple[str, ...]) -> dict[str, Path]:
    """Write trials.csv, pareto.csv, pareto.json and pareto.html (and final.csv for a finalized study) into
    ``out_dir``; ``param_columns`` from :func:`search.space.param_columns` (the model's cut-point table)."""
    v = as_view(study)
    study = v.study
    out_dir.mkdir(parents=True, exist_ok=True)
    all_rows, pareto = study_frames(v, param_columns)
    paths = {name: out_dir / name for name in ("trials.csv", "pareto.csv", "pareto.json", "pareto.html")}
    if v.finals:
        paths["final.csv"] = out_dir / "final.csv"
        with atomic(paths["final.csv"]) as tmp:
            final_frame(v, param_columns).to_csv(tmp, index=False)
    with atomic(paths["trials.csv"]) as tmp:
        all_rows.to_csv(tmp, index=False)
    with atomic(paths["pareto.csv"]) as tmp:
        pareto.to_csv(tmp, index=False)
    records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
               for r in pareto.to_dict(orient="records")]
    rec = StudyRecord.of(study)
    meta = {"study": study.study_name, "model": rec.model, "objectives": ["node_energy_mJ", "latency_ms"],
            "baseline_mAP50": rec.baseline_mAP50, "th": v.th, "fidelity": v.fidelity,
            "fidelity_note": "each point's 'fidelity' says whose numbers it has: search (the trial's short "
                             "fine-tuning) or final (mode=finalize, train.final; 'mAP50_search' keeps the search-time "
                             "mAP)", "points": records}
    with atomic(paths["pareto.json"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, default=_json_default))
    with atomic(paths["pareto.html"]) as tmp:
        pareto_figure(all_rows, pareto, study.study_name).write_html(tmp, include_plotlyjs=True, full_html=True)
    return paths


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """Write ``path`` through a temporary file beside it and rename it into place, so a reader (or another
    worker writing the same export) never sees a half-written file."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what a plain open() would have created
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


SYMBOLS = {0: "square", 1: "circle", 2: "diamond", 3: "cross", 4: "x", 5: "triangle-up", 6: "star"}


def pareto_figure(all_rows: pd.DataFrame, pareto: pd.DataFrame, title: str) -> go.Figure:
    """Energy vs latency: colour = radio, symbol = partition j, infeasible grey, Pareto points outlined."""
    fig = go.Figure()
    if all_rows.empty:
        return fig.update_layout(title=f"{title}: no trials yet")
    done = all_rows[all_rows["state"] == "COMPLETE"]
    hover_cols = [c for c in done.columns if c not in ("state",)]

    def hover(df: pd.DataFrame) -> list[str]:
        return ["<br>".join(f"{c}: {r[c]}" for c in hover_cols if pd.notna(r[c])) for _, r in df.iterrows()]

    infeasible = done[done["feasible"] != True]  # noqa: E712 - None counts as infeasible
    if len(infeasible):
        fig.add_trace(go.Scatter(x=infeasible["latency_ms"], y=infeasible["node_energy_mJ"], mode="markers",
                                 name="infeasible", marker=dict(color="lightgrey", size=7,
                                 symbol=[SYMBOLS.get(int(j), "circle") for j in infeasible["j"]]),
                                 text=hover(infeasible), hoverinfo="text"))
    feasible = done[done["feasible"] == True]  # noqa: E712
    for radio, df in feasible.groupby("radio"):
        fig.add_trace(go.Scatter(x=df["latency_ms"], y=df["node_energy_mJ"], mode="markers", name=str(radio),
                                 marker=dict(size=9, symbol=[SYMBOLS.get(int(j), "circle") for j in df["j"]]),
                                 text=hover(df), hoverinfo="text"))
    if len(pareto):
        p = pareto.sort_values("latency_ms")
        fig.add_trace(go.Scatter(x=p["latency_ms"], y=p["node_energy_mJ"], mode="lines+markers", name="Pareto front",
                                 line=dict(color="black", dash="dot"),
                                 marker=dict(size=14, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                                 text=hover(p), hoverinfo="text"))
    fig.update_layout(title=f"{title}: node energy vs end-to-end latency (symbol = partition j: "
                            + ", ".join(f"{j}={s}" for j, s in SYMBOLS.items()) + ")",
                      xaxis_title="end-to-end latency [ms]", yaxis_title="node energy [mJ]", template="plotly_white")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def summary_lines(study: optuna.Study | StudyView, param_columns: tuple[str, ...], limit: int = 15) -> list[str]:
    v = as_view(study)
    _, pareto = study_frames(v, param_columns)
    rec = StudyRecord.of(v.study)
    base = float("nan") if rec.baseline_mAP50 is None else rec.baseline_mAP50
    at = "" if v.th is None else f" at th={v.th:g}"
    fid = f", {v.fidelity} numbers ({len({(r.accuracy_key) for r in map(TrialRecord.from_trial, v.finals)})} " \
          f"models finalized)" if v.finals else ""
    lines = [f"study {v.study.study_name}: {len(v.trials)} trials, "
             f"{len(pareto)} feasible Pareto points{at}{fid} (baseline mAP@0.5 {base:.4f})"
             + (f"; model {rec.model}" if rec.model else "")]
    if pareto.empty:
        return lines
    lines.append(f"{'j':>2} {'bits':>4} {'keep_cut':>8} {'image':>8} {'radio':>7} {'codec':>5} {'mAP50':>6} "
                 f"{'payload B':>9} {'energy mJ':>10} {'latency ms':>11}" + (" fidelity" if v.finals else ""))
    for _, r in pareto.head(limit).iterrows():
        bits = "-" if pd.isna(r["bits"]) else int(r["bits"])
        keep = "-" if pd.isna(r["keep_cut"]) else f"{r['keep_cut']:.3f}"
        img = f"{r['image_codec']} {int(r['image_quality'])}" if isinstance(r.get("image_codec"), str) and \
            r["image_codec"] else "raw" if int(r["j"]) == 0 else "-"
        lines.append(f"{int(r['j']):>2} {bits:>4} {keep:>8} {img:>8} {r['radio']:>7} {r['codec']:>5} "
                     f"{r['mAP50']:>6.3f} {int(r['payload_bytes']):>9} {r['node_energy_mJ']:>10.3f} "
                     f"{r['latency_ms']:>11.2f}" + (f" {r['fidelity']}" if v.finals else ""))
    all_rows, _ = study_frames(v, param_columns)
    done = all_rows[all_rows["state"] == "COMPLETE"] if len(all_rows) else all_rows
    if len(done):
        lines += versus.summary(done, done["feasible"] == True, rec.node_j if rec.node_j is not None else 6)  # noqa: E712
    return lines


def print_summary(study: optuna.Study | StudyView, param_columns: tuple[str, ...]) -> None:
    print("\n".join(summary_lines(study, param_columns)), flush=True)
