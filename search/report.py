"""``mode=report``: the paper's figures and tables from any study, as one self-contained HTML page.

The data behind each figure and table is computed by a pure function of the study's trial rows
(:func:`report_data`, tested); :func:`write_report` only draws it.

- Fig. 3: mAP@0.5 vs payload bytes at the split, per partition j (one point per evaluated model).
- Fig. 4: mAP@0.5 vs remaining node MACs (share of the unpruned node part at the same j), per j.
- Fig. 5: node energy and end-to-end latency per partition and radio (best feasible point of each pair).
- Table I: energy saving and speed-up of the best feasible point against the best coded image (JPEG / WebP at
  j=0, :mod:`search.versus`) on the same radio, and against all-in-edge with raw pixels (the paper's comparison,
  labelled as such) and all-in-node (j=6) on the same radio and codec, without pruning and with pruning.
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
from search.export import StudyView, as_view, atomic, final_frame, study_frames, trial_row
from search.finalize import agreement
from search.record import StudyRecord
from search.versus import RAW, equal_map, option, rate_accuracy, versus_coded

PAPER_TH = 0.05  # the paper keeps mAP@0.5 > 95 % of its 99.11 % baseline: ~0.05 (study=energy_latency's th)

PAPER_TABLE1 = {  # Saqib et al., Table I
    "without pruning": {"energy_saving_vs_edge": 1.26, "energy_saving_vs_node": 3.8, "speedup_vs_edge": 2.05,
                        "speedup_vs_node": 1.05},
    "with pruning": {"energy_saving_vs_edge": 5.74, "energy_saving_vs_node": 17.0, "speedup_vs_edge": 5.24,
                     "speedup_vs_node": 2.65},
}
PAPER = {  # Saqib et al., abstract and Sec. IV-V; the savings are Table I's "with pruning" row
    "compute_reduction": 0.90, "data_reduction": 0.99, "map_relative": 0.95, "payload_bytes": 5000,
    "baseline_map50": 0.9911, **PAPER_TABLE1["with pruning"],
}


def _keep_columns(columns) -> dict[str, str]:
    """Short label -> column of the share of channels kept, cut conv first (``keep_cut`` -> 'cut',
    ``keep_L2`` -> 'L2'), from the columns the export wrote (the model's cut-point table)."""
    cols = [c for c in columns if str(c).startswith("keep_")]
    return {c.removeprefix("keep_"): c for c in sorted(cols, key=lambda c: (c != "keep_cut", len(c), c))}


def _unpruned(df: pd.DataFrame) -> pd.Series:
    keeps = list(_keep_columns(df.columns).values())
    return df[keeps].fillna(1.0).ge(1.0 - 1e-9).all(axis=1)


def _paper_table1_sentence() -> str:
    def case(name: str) -> str:
        r = PAPER_TABLE1[name]
        return (f"{name} x{r['energy_saving_vs_edge']:g} / x{r['energy_saving_vs_node']:g} energy, "
                f"x{r['speedup_vs_edge']:g} / x{r['speedup_vs_node']:g} speed-up")

    return f"Paper: {case('without pruning')}; {case('with pruning')} (vs all-in-edge / all-in-node)."


def _complete(rows: pd.DataFrame) -> pd.DataFrame:
    done = rows[rows["state"] == "COMPLETE"].copy()
    if len(done):
        done["unpruned"] = _unpruned(done)
        done["j"] = done["j"].astype(int)
    return done


def feasible_at(df: pd.DataFrame, th: float) -> pd.Series:
    """Eq. 4 at ``th`` (mAP@0.5 >= baseline - th) and the node platform's limits, per row."""
    platform = df["platform_feasible"].fillna(False).astype(bool) if "platform_feasible" in df else True
    return platform & (df["mAP50"] >= df["baseline_mAP50"] - th)


def report_data(rows: pd.DataFrame, node_j: int = 6, final_rows: pd.DataFrame | None = None,
                pool_rows: pd.DataFrame | None = None, th: float | None = None) -> dict[str, Any]:
    """Everything the report draws, from ``trials.csv``-style rows (complete trials only are used). ``node_j``: the
    partition index at which everything runs on the node (Tiny-YOLOv3's 6); j = 0 sends the image, the js
    between are splits.

    A finalized study adds ``final_rows`` (``final.csv``: one row per final trial), ``pool_rows`` (the complete
    trials with final numbers where they exist) and ``th`` (the study's threshold): Table I and the headline table
    are then computed from ``pool_rows`` at the paper's threshold (:data:`PAPER_TH`) if a split point is feasible
    there, else at ``th``; ``table_note`` says which."""
    done = _complete(rows)
    out: dict[str, Any] = {"n_trials": len(rows), "n_models": 0}
    if done.empty:
        return out
    models = done[done["role"] == "primary"].drop_duplicates("parent")
    out["n_models"] = len(models)
    # Fig. 3 / Fig. 4: one point per model (its own codec's payload), split points only
    split_models = done.drop_duplicates(["parent", "codec"])
    split_models = split_models[split_models["j"].between(1, node_j - 1)]
    unpruned_macs = split_models[split_models["unpruned"]].groupby("j")["node_macs"].max()
    fig34 = split_models[["j", "codec", "mAP50", "payload_bytes", "node_macs", "raw_bytes", "bits", "keep_cut",
                          "parent"]].copy()
    fig34["node_macs_share"] = [m / unpruned_macs.get(j, math.nan) for j, m in zip(fig34["j"], fig34["node_macs"],
                                                                                    strict=True)]
    out["fig3"] = fig34.sort_values(["j", "payload_bytes"])
    out["fig4"] = fig34.drop_duplicates("parent").sort_values(["j", "node_macs_share"])
    # Fig. 5: best feasible point per (j, radio) by energy
    feas = done[done["feasible"] == True]  # noqa: E712
    feas = feas.assign(where=[f"0 {o}" if j == 0 else str(j) for j, o in zip(feas["j"], option(feas, node_j),
                                                                             strict=True)])
    best = feas.sort_values("node_energy_mJ").groupby(["where", "radio"], as_index=False).first()
    out["fig5"] = best[["where", "j", "radio", "codec", "node_energy_mJ", "latency_ms", "mAP50",
                        "payload_bytes"]].sort_values(["j", "where"])
    out["rate"] = rate_accuracy(done, node_j)
    # Table I
    if final_rows is None or not len(final_rows) or pool_rows is None or th is None:
        out["table1"] = table1(done, feas, node_j)
        out["headline"] = headline(done, feas, node_j)
        ok = done["feasible"] == True  # noqa: E712
        out["versus"], out["equal_map"] = versus_coded(done, ok, node_j), equal_map(done, ok, node_j)
    else:
        pool = _complete(pool_rows)
        split = pool["j"].between(1, node_j - 1)
        paper = feasible_at(pool, PAPER_TH)
        at = PAPER_TH if (paper & split).any() else th
        feas_pool = pool[feasible_at(pool, at)]
        out["table1"] = table1(pool, feas_pool, node_j)
        out["headline"] = headline(pool, feas_pool, node_j)
        ok = feasible_at(pool, at)
        out["versus"], out["equal_map"] = versus_coded(pool, ok, node_j), equal_map(pool, ok, node_j)
        finalized = final_rows["accuracy_key"].nunique()
        source = (f"final numbers (mode=finalize, {finalized} models) where they exist, search-time numbers "
                  f"elsewhere")
        out["table_note"] = (f"Computed at the paper's threshold th = {PAPER_TH:g} from {source}." if at == PAPER_TH
                             else f"Computed at the study's threshold th = {th:g} from {source}: the final numbers "
                                  f"leave no split point feasible at the paper's th = {PAPER_TH:g}.")
        out["table_th"] = at
        out.update(final_agreement(final_rows, th))
    return out


def final_agreement(final_rows: pd.DataFrame, th: float) -> dict[str, Any]:
    """Search-time vs final mAP@0.5, one point per finalized model (``final.csv`` rows), with
    :func:`search.finalize.agreement`'s statistics at the threshold baseline - ``th``."""
    per = final_rows.sort_values("trial").drop_duplicates("accuracy_key", keep="last")
    per = per[["accuracy_key", "j", "bits", "keep_cut", "mAP50_search", "mAP50", "mAP50_95", "baseline_mAP50",
               "finetune_steps", "finetune_seconds"]].rename(columns={"mAP50": "mAP50_final"})
    threshold = float(per["baseline_mAP50"].iloc[0]) - th
    a = agreement(per["mAP50_search"].tolist(), per["mAP50_final"].tolist(), per["accuracy_key"].tolist(), threshold)
    per = per.assign(change=per["mAP50_final"] - per["mAP50_search"],
                     feasibility=["now feasible" if k in a.became_feasible else "now infeasible"
                                  if k in a.became_infeasible else "" for k in per["accuracy_key"]])
    return {"final": per.sort_values("mAP50_search", ascending=False), "agreement": a}


def table1(done: pd.DataFrame, feas: pd.DataFrame, node_j: int = 6) -> pd.DataFrame:
    """Best feasible split point (lowest energy) without / with pruning vs the best feasible coded image on its
    radio (any codec and quality: ``*_vs_coded``), all-in-edge sending raw pixels (j=0, ``*_vs_edge``) and
    all-in-node (j=``node_j``) on its radio and codec."""
    rows = []
    split = feas["j"].between(1, node_j - 1)
    for label, pool in (("without pruning", feas[split & feas["unpruned"]]), ("with pruning", feas[split])):
        if pool.empty:
            continue
        b = pool.sort_values("node_energy_mJ").iloc[0]
        fast = pool.sort_values("latency_ms").iloc[0]
        row: dict[str, Any] = {"case": label, "best energy point": _describe(b), "best latency point": _describe(fast)}
        for base_j, name in ((0, "edge"), (node_j, "node")):
            ref = _same(done, base_j, b)
            ref_fast = _same(done, base_j, fast)
            e_ref = ref["node_energy_mJ"].min() if len(ref) else math.nan
            row[f"energy_saving_vs_{name}"] = e_ref / b["node_energy_mJ"]
            row[f"speedup_vs_{name}"] = ref_fast["latency_ms"].min() / fast["latency_ms"] if len(ref_fast) else math.nan
        coded = feas[(feas["j"] == 0) & ~option(feas, node_j).isin([RAW])]
        ce, cl = coded[coded["radio"] == b["radio"]], coded[coded["radio"] == fast["radio"]]
        row["energy_saving_vs_coded"] = ce["node_energy_mJ"].min() / b["node_energy_mJ"] if len(ce) else math.nan
        row["speedup_vs_coded"] = cl["latency_ms"].min() / fast["latency_ms"] if len(cl) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _same(done: pd.DataFrame, j: int, r: pd.Series) -> pd.DataFrame:
    """Trials at partition j on the radio and codec of ``r`` (at j=0 those that send the raw image)."""
    same = done[(done["j"] == j) & (done["radio"] == r["radio"]) & (done["codec"] == r["codec"])]
    return same[option(same, -1) == RAW] if j == 0 and len(same) else same


def _describe(r: pd.Series) -> str:
    """E.g. 'j=2, 1 bit, cut 100 %, L0 50 %, wifi/zlib' (shares of channels kept)."""
    bits = "" if pd.isna(r.get("bits")) else f", {int(r['bits'])} bit"
    keeps = ((name, r.get(col)) for name, col in _keep_columns(r.index).items())
    keep = "".join(f", {name} {100 * float(v):.3g} %" for name, v in keeps if v is not None and not pd.isna(v))
    return f"j={int(r['j'])}{bits}{keep}, {r['radio']}/{r['codec']}"


def headline(done: pd.DataFrame, feas: pd.DataFrame, node_j: int = 6) -> pd.DataFrame:
    """The paper's headline claims next to this study's figures, each with a sentence on the difference."""
    base = done["baseline_mAP50"].dropna()
    base_map = float(base.iloc[0]) if len(base) else math.nan
    split = feas[feas["j"].between(1, node_j - 1)]
    good = split[split["mAP50"] >= 0.95 * base_map] if len(split) else split
    unpruned = done[done["j"].between(1, node_j - 1) & done["unpruned"]].groupby("j")["node_macs"].max()
    comp = [1 - m / unpruned[j] for j, m in zip(good["j"], good["node_macs"], strict=True) if j in unpruned]
    raw_image = done[done["j"] == 0]["raw_bytes"].max() if (done["j"] == 0).any() else math.nan
    data_red = 1 - good["payload_bytes"].min() / raw_image if len(good) and raw_image == raw_image else math.nan
    t1 = table1(done, feas, node_j)
    pr = t1[t1["case"] == "with pruning"] if "case" in t1 else t1

    def t(col: str) -> float:
        return float(pr[col].iloc[0]) if len(pr) else math.nan

    none95 = ""
    if not len(good):
        best = done[done["j"].between(1, node_j - 1)]["mAP50"].max()
        none95 = (" No split point of this study reached 95 % of the baseline mAP" +
                  (f" (the best reached {best:.3f} of {base_map:.3f})." if best == best else "."))

    rows = [
        ("baseline mAP@0.5", PAPER["baseline_map50"], base_map,
         "The paper trains on MIUN-Feet (real images, 416 px); this study's data set and input size are its own."),
        ("compute reduction on the node at mAP >= 95 % of baseline", PAPER["compute_reduction"],
         max(comp) if comp else math.nan,
         "Share of the unpruned node MACs removed by steps 1+2 at the same j; depends on how far pruning is searched."
         + none95),
        ("data reduction at mAP >= 95 % of baseline (vs the raw image)", PAPER["data_reduction"], data_red,
         "Payload after quantization, pruning, packing and the codec, header included, against the 8-bit image."
         + none95),
        ("smallest payload at mAP >= 95 % of baseline [B]", PAPER["payload_bytes"],
         float(good["payload_bytes"].min()) if len(good) else math.nan,
         "The paper reports < 5 kB at 416 px; smaller inputs give smaller maps." + none95),
        ("energy saving vs all-in-node (x)", PAPER["energy_saving_vs_node"], t("energy_saving_vs_node"),
         "Node energy comes from this study's platform profile (MLPerf-Tiny-derived), not the paper's Ivanov figures."),
        ("energy saving vs all-in-edge, raw pixels (x)", PAPER["energy_saving_vs_edge"], t("energy_saving_vs_edge"),
         "All-in-edge sends the 8-bit image, as in the paper; its cost is set by the radio profiles (Krug & O'Nils "
         "model here). Nobody deploys that: see the next row."),
        ("energy saving vs the best coded image (x)", math.nan, t("energy_saving_vs_coded"),
         "The paper has no coded-image baseline. The lowest-energy feasible JPEG/WebP of the image on the same radio, "
         "its encoder priced on the node; below 1 the coded image needs less node energy than the split."),
        ("speed-up vs all-in-edge, raw pixels (x)", PAPER["speedup_vs_edge"], t("speedup_vs_edge"),
         "Edge latency is an assumption-labelled RTX 3090 model unless platform/edge=measured."),
        ("speed-up vs the best coded image (x)", math.nan, t("speedup_vs_coded"),
         "The lowest-latency feasible coded image on the radio of the lowest-latency split."),
    ]
    return pd.DataFrame(rows, columns=["claim", "paper", "this study", "why they differ"])


# ------------------------------------------------------------------------------------------ drawing


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
        curve = opt not in ("split", RAW)
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
