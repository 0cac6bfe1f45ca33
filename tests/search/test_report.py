from __future__ import annotations

import re
import shutil
import subprocess

import optuna
import pytest

from search.export import study_frames
from search.record import TrialRecord
from search.report import report_data, write_report

COLUMNS = ("j", "bits", "keep_cut", "keep_L0", "keep_L2", "keep_L4", "keep_L6", "criterion")

DIST = {"j": optuna.distributions.CategoricalDistribution([0, 3, 4, 6]),
        "keep_cut": optuna.distributions.FloatDistribution(0.001, 1.0, log=True)}


def add(study, j, keep, radio, energy, latency, mAP, payload, macs, feasible=True, parent=None, role="primary"):
    params = {"j": j} if keep is None else {"j": j, "keep_cut": keep}
    n = len(study.trials)
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={k: DIST[k] for k in params}, values=[energy, latency],
        constraints={"map50_drop": 0.0 if feasible else 1.0},
        user_attrs=TrialRecord(role=role, parent=n if parent is None else parent, radio=radio, codec="zlib",
                               feasible=feasible, mAP50=mAP, baseline_mAP50=0.92, payload_bytes=payload,
                               raw_bytes=76800 if j == 0 else payload, node_macs=macs).to_attrs()))


@pytest.fixture()
def study():
    s = optuna.create_study(directions=["minimize", "minimize"], study_name="r")
    add(s, 0, None, "wifi", 40.0, 30.0, 0.92, 76824, 0)
    add(s, 6, None, "wifi", 400.0, 2000.0, 0.92, 60, 400_000_000)
    add(s, 3, 1.0, "wifi", 50.0, 300.0, 0.91, 3224, 70_000_000)            # unpruned split
    add(s, 3, 0.125, "wifi", 20.0, 250.0, 0.90, 424, 40_000_000)           # pruned, feasible
    add(s, 3, 0.125, "ble5", 22.0, 400.0, 0.90, 424, 40_000_000, parent=3, role="sibling")
    add(s, 4, 0.01, "wifi", 5.0, 100.0, 0.50, 37, 60_000_000, feasible=False)  # infeasible
    return s


def test_report_data_figures_and_table1(study):
    rows, _ = study_frames(study, COLUMNS)
    d = report_data(rows)
    assert d["n_models"] == 5
    f3 = d["fig3"]
    assert set(f3["j"]) == {3, 4} and len(f3) == 3  # split points only, one row per model and codec
    f4 = d["fig4"].set_index("parent")
    assert f4.loc[3, "node_macs_share"] == pytest.approx(40 / 70)  # vs the unpruned model at the same j
    f5 = d["fig5"].set_index(["j", "radio"])
    assert f5.loc[(3, "wifi"), "node_energy_mJ"] == 20.0  # best feasible per (j, radio); j=4 is infeasible
    assert (4, "wifi") not in f5.index
    t1 = d["table1"].set_index("case")
    assert t1.loc["without pruning", "energy_saving_vs_edge"] == pytest.approx(40 / 50)
    assert t1.loc["without pruning", "energy_saving_vs_node"] == pytest.approx(400 / 50)
    assert t1.loc["with pruning", "energy_saving_vs_node"] == pytest.approx(400 / 20)
    assert t1.loc["with pruning", "speedup_vs_edge"] == pytest.approx(30 / 250)
    assert t1.loc["with pruning", "speedup_vs_node"] == pytest.approx(2000 / 250)
    assert t1.loc["without pruning", "best energy point"] == "j=3, cut 100 %, wifi/zlib"
    assert t1.loc["with pruning", "best energy point"] == "j=3, cut 12.5 %, wifi/zlib"
    h = d["headline"].set_index("claim")
    assert h.loc["smallest payload at mAP >= 95 % of baseline [B]", "this study"] == 424
    assert h.loc["energy saving vs all-in-node (x)", "paper"] == 17.0
    assert h["why they differ"].str.len().min() > 20  # one sentence on each difference
    assert not h["why they differ"].str.contains("No split point").any()  # 424 B reached 95 % here


def test_report_html_offline(study, tmp_path):
    path = write_report(study, tmp_path, COLUMNS)
    text = path.read_text()
    assert "<script src=" not in text and len(text) > 3_000_000  # plotly.js inlined: opens offline
    assert "Table I" in text and "Fig. 5" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on this machine (apt-get install chromium)")
def test_report_loads_in_headless_chromium_without_console_errors(study, tmp_path):
    path = write_report(study, tmp_path, COLUMNS)
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    console = [ln for ln in p.stderr.splitlines() if "CONSOLE" in ln]
    assert not [ln for ln in console if re.search(r"error|uncaught", ln, re.I)], console
    assert p.stdout.count('class="main-svg"') >= 3  # plotly ran and drew the three figures


def test_report_with_no_feasible_split(tmp_path):
    s = optuna.create_study(directions=["minimize", "minimize"], study_name="r2")
    add(s, 0, None, "wifi", 40.0, 30.0, 0.92, 76824, 0)
    add(s, 3, 0.1, "wifi", 5.0, 10.0, 0.1, 40, 1000, feasible=False)
    rows, _ = study_frames(s, COLUMNS)
    d = report_data(rows)
    assert d["table1"].empty and "headline" in d
    h = d["headline"].set_index("claim")
    assert "(the best reached 0.100 of 0.920)" in h.loc["smallest payload at mAP >= 95 % of baseline [B]", "why they differ"]
    assert write_report(s, tmp_path, COLUMNS).is_file()
