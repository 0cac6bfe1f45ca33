"""The split against the coded image: who wins per radio, the saving at equal mAP, the rate-accuracy points, and
Table I / the headline rows - hand-built trial rows with hand-computed answers."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from search.export import study_frames, summary_lines
from search.record import TrialRecord
from search.report import report_data, write_report
from search.versus import equal_map, option, rate_accuracy, versus_coded
from tests.helpers import accuracy_result

COLUMNS = ("j", "bits", "keep_cut", "criterion", "image_codec", "jpeg_quality", "webp_quality")


def row(trial, j, radio, mJ, ms, mAP, B, key, image="", q=0, feasible=True, codec="none", bits=None, keep=None):
    return {"trial": trial, "j": j, "radio": radio, "codec": codec, "node_energy_mJ": mJ, "latency_ms": ms,
            "mAP50": mAP, "payload_bytes": B, "accuracy_key": key, "image_codec": image if j == 0 else None,
            "image_quality": q if image else None, "feasible": feasible, "bits": bits, "keep_cut": keep,
            "cut_shape": "3x160x160" if j == 0 else "8x20x20"}


ROWS = pd.DataFrame([
    row(0, 0, "lora", 900.0, 9e4, 0.92, 76824, "j=0"),                                   # raw image
    row(1, 0, "lora", 30.0, 2000.0, 0.91, 3000, "j=0;img=jpeg;q=50", "jpeg", 50),
    row(2, 0, "lora", 12.0, 900.0, 0.88, 1200, "j=0;img=webp;q=25", "webp", 25),
    row(3, 2, "lora", 8.0, 600.0, 0.89, 800, "s1", bits=1, keep=0.1),                    # split, fewest bytes
    row(4, 3, "lora", 9.0, 500.0, 0.90, 2500, "s2", bits=2, keep=0.5),
    row(5, 0, "wifi", 40.0, 30.0, 0.92, 76824, "j=0"),
    row(6, 0, "wifi", 1.0, 3.0, 0.91, 3000, "j=0;img=jpeg;q=50", "jpeg", 50),
    row(7, 0, "wifi", 12.5, 20.0, 0.88, 1200, "j=0;img=webp;q=25", "webp", 25),
    row(8, 2, "wifi", 4.0, 8.0, 0.89, 800, "s1", bits=1, keep=0.1),
    row(9, 3, "wifi", 5.0, 6.0, 0.90, 2500, "s2", bits=2, keep=0.5),
    row(10, 3, "wifi", 0.1, 0.1, 0.40, 50, "s3", feasible=False, bits=1, keep=0.01),   # infeasible: never counts
    row(11, 6, "wifi", 300.0, 900.0, 0.80, 60, "j=6", feasible=False),
])
OK = ROWS["feasible"] == True  # noqa: E712


def test_option_names_what_the_node_sends():
    assert list(option(ROWS, 6)) == ["raw image", "jpeg", "webp", "split", "split"] * 2 + ["split", "all in node"]


def test_versus_per_radio_the_split_wins_on_lora_and_loses_on_wifi():
    v = versus_coded(ROWS, OK, 6).set_index("radio")
    lora, wifi = v.loc["lora"], v.loc["wifi"]
    assert lora["split point"] == "j=2, 1 bit, cut 10 %/none" and lora["coded image point"] == "webp q25"
    assert lora["energy_saving_vs_coded"] == pytest.approx(12.0 / 8.0) and lora["verdict"] == "split wins on energy"
    assert lora["speedup_vs_coded"] == pytest.approx(900.0 / 500.0)  # the fastest of each
    assert lora["payload_ratio_vs_coded"] == pytest.approx(1200 / 800)
    assert lora["raw image mJ"] == 900.0
    assert wifi["coded image point"] == "jpeg q50" and wifi["split mJ"] == 4.0  # the infeasible 0.1 mJ is not it
    assert wifi["energy_saving_vs_coded"] == pytest.approx(1.0 / 4.0) and wifi["verdict"] == "coded image wins on energy"


def test_equal_map_saving_is_negative_where_the_coded_image_is_smaller():
    eq = equal_map(ROWS, OK, 6)
    # the smallest feasible split (800 B at 0.89) against the smallest coded image of at least 0.89: jpeg q50, 3000 B
    assert eq["split"] == "j=2, 1 bit, cut 10 %/none" and eq["coded"] == "jpeg q50"
    assert eq["byte_saving"] == pytest.approx(1 - 800 / 3000)
    per = eq["per_radio"].set_index("radio")
    assert per.loc["lora", "energy saving"] == pytest.approx(1 - 8.0 / 30.0)
    assert per.loc["wifi", "energy saving"] == pytest.approx(1 - 4.0 / 1.0)  # -3: the coded image needs a quarter
    worse = ROWS.assign(mAP50=ROWS["mAP50"].where(ROWS["j"] != 0, 0.5))  # no coded image reaches the split's mAP
    assert equal_map(worse, OK, 6)["coded"] is None
    assert equal_map(ROWS[ROWS["j"] == 0], OK[ROWS["j"] == 0], 6) is None  # no split at all


def test_rate_accuracy_one_point_per_model_with_bits_per_pixel():
    r = rate_accuracy(ROWS, 6)
    assert sorted(r["accuracy_key"]) == ["j=0", "j=0;img=jpeg;q=50", "j=0;img=webp;q=25", "s1", "s2", "s3"]
    webp = r.set_index("accuracy_key").loc["j=0;img=webp;q=25"]
    assert webp["option"] == "webp" and webp["bits_per_pixel"] == pytest.approx(8 * 1200 / (160 * 160))
    assert math.isnan(rate_accuracy(ROWS[ROWS["j"] > 0], 6)["bits_per_pixel"].iloc[0])  # no image size known
    # a learned bottleneck is a split everywhere but in this figure, where it is a curve of its own
    bn = pd.DataFrame([row(12, 4, "wifi", 3.0, 5.0, 0.89, 400, "j=4;bn=16;lam=0.005")])
    both = pd.concat([ROWS, bn], ignore_index=True)
    assert option(bn, 6).tolist() == ["split"]
    assert rate_accuracy(both, 6).set_index("accuracy_key").loc["j=4;bn=16;lam=0.005", "option"] == \
        "split, learned bottleneck"
    assert (rate_accuracy(both, 6)["option"] == "split").sum() == 3


def add(study, j, radio, energy, latency, mAP, payload, image="", q=0, keep=None, feasible=True):
    """A complete trial as the objective stores it (a coded image carries its codec in the accuracy record)."""
    params = {"j": j} if keep is None else {"j": j, "keep_cut": keep}
    dist = {"j": optuna.distributions.CategoricalDistribution([0, 3, 6]),
            "keep_cut": optuna.distributions.FloatDistribution(0.001, 1.0, log=True)}
    key = f"j=0;img={image};q={q}" if image else f"j={j};{keep}"
    acc = accuracy_result(key, j, mAP, {"zlib": payload}, cut_shape=[3, 160, 160] if j == 0 else [8, 20, 20],
                          image_codec=image, quality=q)
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions={k: dist[k] for k in params}, values=[energy, latency],
        constraints={"map50_drop": 0.0 if feasible else 1.0},
        user_attrs=TrialRecord(parent=len(study.trials), radio=radio, codec="zlib", accuracy_key=key,
                               feasible=feasible, mAP50=mAP, baseline_mAP50=0.92, payload_bytes=payload,
                               raw_bytes=payload, node_macs=0, accuracy=acc).to_attrs()))


def test_table1_headline_and_report_compare_with_the_coded_image_and_keep_raw_pixels(tmp_path):
    s = optuna.create_study(directions=["minimize", "minimize"], study_name="v")
    add(s, 0, "wifi", 40.0, 30.0, 0.92, 76824)                       # raw pixels: the paper's all-in-edge
    add(s, 0, "wifi", 2.0, 6.0, 0.91, 1500, "webp", 30)              # the coded image
    add(s, 6, "wifi", 400.0, 2000.0, 0.92, 60)
    add(s, 3, "wifi", 10.0, 12.0, 0.90, 900, keep=0.125)             # the best split
    rows, _ = study_frames(s, COLUMNS)
    d = report_data(rows)
    t1 = d["table1"].set_index("case").loc["with pruning"]
    assert t1["energy_saving_vs_edge"] == pytest.approx(40 / 10)    # raw pixels, as the paper compares
    assert t1["energy_saving_vs_coded"] == pytest.approx(2 / 10)    # < 1: the coded image needs less energy
    assert t1["speedup_vs_coded"] == pytest.approx(6 / 12)
    h = d["headline"].set_index("claim")
    assert h.loc["energy saving vs the best coded image (x)", "this study"] == pytest.approx(0.2)
    assert h.loc["energy saving vs all-in-edge, raw pixels (x)", "this study"] == pytest.approx(4.0)
    assert list(d["fig5"]["where"]) == ["0 raw image", "0 webp", "3", "6"]
    assert d["versus"].set_index("radio").loc["wifi", "verdict"] == "coded image wins on energy"
    assert d["equal_map"]["byte_saving"] == pytest.approx(1 - 900 / 1500)
    text = write_report(s, tmp_path, COLUMNS).read_text()
    assert "Is splitting worth it?" in text and "Rate-accuracy" in text and "saves +40.0 % of the bytes" in text
    lines = "\n".join(summary_lines(s, COLUMNS))
    assert "wifi: split j=3" in lines and "coded image wins on energy" in lines and "webp 30" in lines
