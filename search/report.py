"""``mode=report``: the paper's figures and tables from any study, as one self-contained HTML page.

The data behind each figure and table is computed by a pure function of the study's trial rows
(:func:`report_data`, tested); :func:`write_report` only draws it.

- Fig. 3: mAP@0.5 vs payload bytes at the split, per partition j (one point per evaluated model).
- Fig. 4: mAP@0.5 vs remaining node MACs (share of the unpruned node part at the same j), per j.
- Fig. 5: node energy and end-to-end latency per partition and radio (best feasible point of each pair).
- Table I: energy saving and speed-up of the best feasible point against the best coded image (JPEG / WebP at
  j=0, :mod:`search.versus`) on the same radio, and against all-in-edge with raw pixels (the paper's comparison,
  labelled as such) and all-in-node (the last cut point; Tiny-YOLOv3's j=6) on the same radio and codec, without
  pruning and with pruning.
- Split vs coded image: per radio who wins on energy, bytes and latency, the split's saving at equal mAP, and the
  rate-accuracy figure (payload bytes and bits per input pixel vs mAP@0.5, the coded-image curve of each codec
  beside the split points).
- The paper's headline numbers next to this study's.
- Convergence: hypervolume of the feasible front after each model evaluation (:mod:`search.convergence`, Optuna's
  hypervolume on log10 mJ x log10 ms, reference point 10 % beyond the study's worst feasible values).
- A finalized study (``mode=finalize``): search-time vs final mAP@0.5 of every finalized model (scatter with the
  identity line), Kendall's tau, the mean absolute change and the models whose feasibility changed; Table I and
  the headline table then use the final numbers where they exist, at the paper's threshold (th = 0.05) when at
  least one split point is feasible there, and say which threshold they use.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.convergence import history, reference_point
from search.export import atomic, final_frame, study_frames, trial_row
from search.record import StudyRecord
from search.report_data import PAPER_TABLE1, feasible_at, final_agreement, headline, report_data, table1
from search.versus import BOTTLENECK, RAW
from search.view import StudyView, as_view

__all__ = ["feasible_at", "final_agreement", "headline", "report_data", "table1", "write_report"]


def _paper_table1_sentence() -> str:
    def case(name: str) -> str:
        r = PAPER_TABLE1[name]
        return (f"{name} x{r['energy_saving_vs_edge']:g} / x{r['energy_saving_vs_node']:g} energy, "
                f"x{r['speedup_vs_edge']:g} / x{r['speedup_vs_node']:g} speed-up")

    return f"Paper: {case('without pruning')}; {case('with pruning')} (vs all-in-edge / all-in-node)."


def _figures(data: dict[str, Any]) -> list[go.Figure]:
    figs = []
    f3 = data.get("fig3")
    if f3 is not None and len(f3):
        fig = go.Figure()
        for j, df in f3.groupby("j"):
            fig.add_trace(go.Scatter(x=df["payload_bytes"], y=df["mAP50"], mode="markers", name=f"j={j}",
                                     text=[f"codec {c}, bits {b}, keep {k}" for c, b, k in
                                           zip(df["codec"], df["bits"], df["keep_cut"], strict=True)]))
        fig.update_layout(title="Fig. 3: mAP@0.5 vs payload at the split (bytes, header included)",
                          xaxis_title="payload [B]", yaxis_title="mAP@0.5", template="plotly_white")
        fig.update_xaxes(type="log")
        figs.append(fig)
    f4 = data.get("fig4")
    if f4 is not None and len(f4):
        fig = go.Figure()
        for j, df in f4.groupby("j"):
            fig.add_trace(go.Scatter(x=100 * df["node_macs_share"], y=df["mAP50"], mode="markers", name=f"j={j}"))
        fig.update_layout(title="Fig. 4: mAP@0.5 vs remaining node MACs (% of the unpruned node part)",
                          xaxis_title="remaining node MACs [%]", yaxis_title="mAP@0.5", template="plotly_white")
        figs.append(fig)
    f5 = data.get("fig5")
    if f5 is not None and len(f5):
        fig = make_subplots(rows=1, cols=2, subplot_titles=("node energy [mJ]", "end-to-end latency [ms]"))
        for i, (radio, df) in enumerate(f5.groupby("radio")):
            color = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"][i % 7]
            fig.add_trace(go.Scatter(x=df["where"], y=df["node_energy_mJ"], mode="lines+markers", name=str(radio),
                                     line=dict(color=color), legendgroup=str(radio)), 1, 1)
            fig.add_trace(go.Scatter(x=df["where"], y=df["latency_ms"], mode="lines+markers", name=str(radio),
                                     line=dict(color=color), legendgroup=str(radio), showlegend=False), 1, 2)
        fig.update_yaxes(type="log")
        fig.update_xaxes(title_text="partition j (j=0: raw image or its coded form)", type="category",
                         categoryorder="array", categoryarray=list(dict.fromkeys(f5["where"])))
        fig.update_layout(title="Fig. 5: best feasible point per partition and radio", template="plotly_white")
        figs.append(fig)
    rate = data.get("rate")
    if rate is not None and len(rate):
        figs.append(_rate_figure(rate))
    return figs


def _rate_figure(rate: pd.DataFrame) -> go.Figure:
    """Payload bytes (log) vs mAP@0.5, one trace per option; coded images as curves over their quality."""
    fig = go.Figure()
    for opt, df in rate.groupby("option"):
        df = df.sort_values("payload_bytes")
        curve = opt not in ("split", RAW, BOTTLENECK)
        fig.add_trace(go.Scatter(x=df["payload_bytes"], y=df["mAP50"], mode="lines+markers" if curve else "markers",
                                 name=str(opt), text=[f"{k}, {b:.3g} bit/px" for k, b in
                                                      zip(df["accuracy_key"], df["bits_per_pixel"], strict=True)],
                                 hoverinfo="text+x+y"))
    fig.update_layout(title="Rate-accuracy: mAP@0.5 vs payload per image (bytes, header included; top axis: bits "
                            "per input pixel); one point per model with its smallest codec",
                      xaxis_title="payload [B]", yaxis_title="mAP@0.5", template="plotly_white")
    fig.update_xaxes(type="log")
    px = rate["payload_bytes"] * 8 / rate["bits_per_pixel"]
    if px.notna().any() and float(px.dropna().iloc[0]) > 0:
        npx = float(px.dropna().iloc[0])
        lo, hi = float(rate["payload_bytes"].min()), float(rate["payload_bytes"].max())
        ticks = [10 ** (k / 2) for k in range(int(2 * math.log10(lo)) - 1, int(2 * math.log10(hi)) + 2)]
        fig.update_layout(xaxis2=dict(overlaying="x", side="top", type="log", tickvals=ticks,
                                      ticktext=[f"{8 * t / npx:.3g}" for t in ticks], title="bits per input pixel",
                                      range=[math.log10(lo) - 0.1, math.log10(hi) + 0.1]))
        fig.update_xaxes(range=[math.log10(lo) - 0.1, math.log10(hi) + 0.1], selector=dict(anchor="y"))
        fig.add_trace(go.Scatter(x=[lo], y=[None], xaxis="x2", showlegend=False, hoverinfo="skip"))
    return fig


def _versus_html(data: dict[str, Any]) -> list[str]:
    """The split-vs-coded-image section: per radio, and at equal mAP."""
    vs = data.get("versus")
    if vs is None or not len(vs):
        return []
    parts = ["<h2>Is splitting worth it? The best split against the best coded image</h2>",
             "<p>Per radio: the lowest-energy feasible split, coded image (JPEG/WebP of the whole image at j=0, its "
             "encoder priced on the node, bytes from the real encoder, mAP on the decoded images) and raw image. "
             "Savings above 1 favour the split, below 1 the coded image.</p>", _table_html(vs)]
    eq = data.get("equal_map")
    if eq and eq.get("coded"):
        word = "saves" if eq["byte_saving"] >= 0 else "needs more: the coded image is smaller, a saving of"
        parts.append(f"<p>At equal mAP@0.5: the smallest feasible split, {html.escape(eq['split'])} "
                     f"({eq['split_B']:.0f} B, mAP@0.5 {eq['split_mAP50']:.3f}), against the smallest coded image "
                     f"at least as accurate, {html.escape(eq['coded'])} ({eq['coded_B']:.0f} B, "
                     f"{eq['coded_mAP50']:.3f}): the split {word} {100 * eq['byte_saving']:+.1f} % of the bytes. "
                     f"Node energy per radio (negative: the coded image needs less):</p>")
        parts.append(_table_html(eq["per_radio"]))
    elif eq:
        parts.append(f"<p>No coded image of this study reaches the smallest feasible split's mAP@0.5 "
                     f"({eq['split_mAP50']:.3f}).</p>")
    return parts


def convergence(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any] | None:
    """Hypervolume of the feasible front after 1, 2, ... model evaluations, against a reference point 10 % beyond
    the study's worst feasible energy and latency (None while nothing is feasible)."""
    try:
        ref = reference_point(trials)
    except ValueError:
        return None
    return {"hv": history(trials, ref), "reference": ref}


def _convergence_figure(conv: dict[str, Any]) -> go.Figure:
    hv = conv["hv"]
    fig = go.Figure(go.Scatter(x=list(range(1, len(hv) + 1)), y=hv, mode="lines+markers", name="hypervolume"))
    ref = conv["reference"]
    fig.update_layout(title=f"Convergence: hypervolume of the feasible front vs model evaluations (log10 mJ x log10 "
                            f"ms, reference {ref[0]:.4g} mJ, {ref[1]:.4g} ms)",
                      xaxis_title="model evaluations (siblings counted with their model)",
                      yaxis_title="hypervolume", template="plotly_white")
    return fig


def _final_figure(per: pd.DataFrame, threshold: float) -> go.Figure:
    lo = float(min(per["mAP50_search"].min(), per["mAP50_final"].min(), threshold)) - 0.02
    hi = float(max(per["mAP50_search"].max(), per["mAP50_final"].max(), threshold)) + 0.02
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="identity",
                             line=dict(color="grey", dash="dot")))
    fig.add_trace(go.Scatter(x=per["mAP50_search"], y=per["mAP50_final"], mode="markers", name="finalized model",
                             marker=dict(size=10), text=per["accuracy_key"], hoverinfo="text+x+y"))
    fig.add_hline(y=threshold, line=dict(color="red", dash="dash"), annotation_text="threshold")
    fig.add_vline(x=threshold, line=dict(color="red", dash="dash"))
    fig.update_layout(title="Search-time vs final mAP@0.5 (one point per finalized model)",
                      xaxis_title="search-time mAP@0.5 (train.finetune)", yaxis_title="final mAP@0.5 (train.final)",
                      template="plotly_white")
    return fig


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0, classes="t")


def write_report(study: optuna.Study | StudyView, out_dir: Path, param_columns: tuple[str, ...]) -> Path:
    """Write ``report.html`` (plotly.js inlined once, so it opens offline)."""
    v = as_view(study)
    study = v.study
    rows, _ = study_frames(v, param_columns)
    rec = StudyRecord.of(study)
    node_j = rec.node_j if rec.node_j is not None else 6  # a study from before the model was recorded: Tiny-YOLOv3
    final = None
    if v.finals and v.th is not None:
        final = (final_frame(v, param_columns), pd.DataFrame([trial_row(t, param_columns) for t in v.pool]), v.th)
    data = (report_data(rows, node_j, *final) if final else report_data(rows, node_j)) if len(rows) else \
        {"n_trials": 0, "n_models": 0}
    out_dir.mkdir(parents=True, exist_ok=True)
    model = f"Model: {html.escape(rec.model)}; " if rec.model else ""
    parts = [f"<h1>Split-CNN study {html.escape(study.study_name)}</h1>",
             f"<p>{model}partition points j = 0 (all on the edge) ... {node_j} (all on the node).</p>",
             f"<p>{data['n_trials']} trials, {data['n_models']} evaluated models. Figures follow Saqib et al.; "
             "Table I compares the best feasible point with the best coded image on the same radio, and with "
             "all-in-edge sending raw pixels (the paper's comparison) and all-in-node on the same radio and "
             "codec.</p>"]
    figs = _figures(data)
    conv = convergence(v.trials)
    if conv is not None:
        figs.append(_convergence_figure(conv))
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    if "agreement" in data:
        a, per = data["agreement"], data["final"]
        threshold = float(per["baseline_mAP50"].iloc[0]) - v.th
        steps = sorted({int(s) for s in per["finetune_steps"].dropna() if s > 0})
        changed = [f"{k} ({'now feasible' if k in a.became_feasible else 'now infeasible'})"
                   for k in (*a.became_feasible, *a.became_infeasible)]
        parts += ["<h2>Search-time vs final accuracy</h2>",
                  f"<p>{a.n} models re-trained from the baseline with the final budget (train.final: "
                  f"{', '.join(map(str, steps)) or 'no'} fine-tuning steps) after the search's short fine-tuning. "
                  f"Kendall's tau (search-time vs final mAP@0.5): {a.kendall_tau:.3f}; mean absolute change "
                  f"{a.mean_abs_change:.4f}, mean change {a.mean_change:+.4f}. Feasibility (mAP@0.5 >= "
                  f"{threshold:.4f}, th = {v.th:g}) changed for {len(changed)} of them"
                  f"{': ' + html.escape('; '.join(changed)) if changed else ''}.</p>",
                  _final_figure(per, threshold).to_html(full_html=False, include_plotlyjs=not figs),
                  _table_html(per.drop(columns=["baseline_mAP50"]))]
    if "table1" in data and len(data["table1"]):
        note = f"<p>{html.escape(data['table_note'])}</p>" if "table_note" in data else ""
        parts += ["<h2>Table I: advantages of the partitioning design solution</h2>", note, _table_html(data["table1"]),
                  f"<p>{_paper_table1_sentence()}</p>"]
    parts += _versus_html(data)
    if "headline" in data:
        parts += ["<h2>The paper's headline numbers and this study's</h2>", _table_html(data["headline"])]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Split-CNN report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px} table.t{border-collapse:collapse}"
            " table.t td,table.t th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path = out_dir / "report.html"
    with atomic(path) as tmp:
        tmp.write_text(page)
    return path
