from __future__ import annotations

from dataclasses import replace

import optuna
import pandas as pd
import pytest
from optuna.trial import FixedTrial

from models import TinyYOLOv3Config, cut_points
from objectives.design import DesignPoint
from search.config import Range
from search.export import export_all, pareto_figure, study_frames, summary_lines
from search.record import TrialRecord
from search.space import baseline_points, distributions_of, param_columns, params_of, suggest
from tests.helpers import conf

SPACE = replace(conf().space, partitions=[0, 1, 2, 3, 4, 5, 6], bits=[1, 2, 8], criteria=["l1", "taylor"],
                codecs=["none", "zlib"], radios=["ble5", "wifi"])
TABLE = cut_points(TinyYOLOv3Config(num_classes=1, input_size=160))
COLUMNS = param_columns(TABLE)


def test_param_columns_come_from_the_cut_table():
    assert COLUMNS == ("j", "bits", "keep_cut", "keep_L0", "keep_L2", "keep_L4", "keep_L6", "criterion",
                       "image_codec", "jpeg_quality", "webp_quality")


def test_suggest_conditional_space():
    p = suggest(FixedTrial({"j": 3, "bits": 2, "keep_cut": 0.25, "keep_L0": 0.5, "keep_L2": 0.75,
                            "criterion": "taylor", "codec": "zlib", "radio": "wifi"}), SPACE, TABLE)
    assert p == DesignPoint(3, 2, 0.25, ((0, 0.5), (2, 0.75)), "taylor", "zlib", "wifi")
    edge = suggest(FixedTrial({"j": 0, "image_codec": "raw", "codec": "none", "radio": "ble5"}), SPACE, TABLE)
    assert edge == DesignPoint(0, 8, 1.0, (), "l1", "none", "ble5")  # no bits or keep ratios exist at j=0
    coded = suggest(FixedTrial({"j": 0, "image_codec": "webp", "webp_quality": 35, "codec": "none", "radio": "ble5"}),
                    SPACE, TABLE)
    assert coded == DesignPoint(0, 8, 1.0, (), "l1", "none", "ble5", "webp", 35)
    assert coded.accuracy_key(TABLE) == "j=0;img=webp;q=35" and edge.accuracy_key(TABLE) == "j=0"
    # a trial stored before image_codec existed sent the raw image
    from search.space import point_of
    assert point_of({"j": 0, "codec": "none", "radio": "ble5"}, SPACE, TABLE) == edge
    # only the chosen lossy codec's quality is suggested, on the space's grid
    only = replace(SPACE, partitions=[0], image_codecs=["jpeg"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        t = study.ask()
        p = suggest(t, only, TABLE)
        assert set(t.params) == {"j", "image_codec", "jpeg_quality", "codec", "radio"}
        assert p.image_codec == "jpeg" and 5 <= p.quality <= 95 and p.quality % 5 == 0


@pytest.mark.parametrize("point", [DesignPoint(5, 1, 0.1, ((0, 0.3), (2, 0.4), (4, 0.5), (6, 0.6)), "l1", "zlib", "ble5"),
                                   DesignPoint(1, 8, 1.0, (), "taylor", "none", "wifi"),
                                   DesignPoint(6, 8, 1.0, (), "l1", "zlib", "wifi"),
                                   DesignPoint(0, 8, 1.0, (), "l1", "zlib", "wifi"),
                                   DesignPoint(0, 8, 1.0, (), "l1", "none", "ble5", "jpeg", 45)])
def test_params_roundtrip(point):
    params = params_of(point, SPACE, TABLE)
    assert suggest(FixedTrial(params), SPACE, TABLE) == point
    dists = distributions_of(params, SPACE, TABLE)
    assert set(dists) == set(params)
    for k, v in params.items():
        # the value lies in its distribution: Optuna accepts it as a trial of that distribution
        optuna.trial.create_trial(params={k: v}, distributions={k: dists[k]}, values=[0.0, 0.0])


def test_baseline_points_cover_every_partition_unpruned():
    pts = baseline_points(SPACE, TABLE)
    assert [p.j for p in pts] == [0] * 7 + [1, 2, 3, 4, 5, 6]
    # j=0: the raw image and each lossy codec at every anchor quality
    assert [(p.image_codec, p.quality) for p in pts if p.j == 0] == [
        ("raw", 0), ("jpeg", 20), ("jpeg", 50), ("jpeg", 80), ("webp", 20), ("webp", 50), ("webp", 80)]
    assert [p.j for p in baseline_points(replace(SPACE, image_codecs=["jpeg"], image_anchors=[40]), TABLE)][:2] == [0, 1]
    assert not any(p.pruned for p in pts)
    assert all(p.bits == 8 for p in pts if 1 <= p.j <= 5)  # the largest width: feasible anchors for the sampler
    assert all(p.bits == 1 for p in baseline_points(SPACE, TABLE, bits=1) if 1 <= p.j <= 5)
    narrow = replace(conf().space, cut_keep=Range(0.01, 0.5, True), codecs=["none"], radios=["ble5"])
    assert [p.j for p in baseline_points(narrow, TABLE)] == [0] * 7 + [6]  # unpruned is outside


def fake_study():
    study = optuna.create_study(directions=["minimize", "minimize"])
    dist = {"j": optuna.distributions.CategoricalDistribution([0, 3, 6])}
    rows = [((1.0, 10.0), 0.0, True), ((2.0, 5.0), 0.0, True), ((3.0, 6.0), 0.0, True),  # (3, 6) dominated
            ((0.5, 1.0), 0.2, False)]                                                   # best but infeasible
    for (e, lat), c, feas in rows:
        study.add_trial(optuna.trial.create_trial(
            params={"j": 3}, distributions=dist, values=[e, lat], constraints={"map50_drop": c},
            user_attrs=TrialRecord(radio="ble5", codec="zlib", feasible=feas, mAP50=0.9, payload_bytes=100,
                                   energy={"compute_mj": e}, latency={"radio_ms": lat}).to_attrs()))
    return study


def test_learned_bottlenecks_are_a_conditional_branch_of_the_space():
    from search.space import point_of

    space = replace(SPACE, bottleneck=replace(SPACE.bottleneck, latent=[8, 16], lambdas=[0.002, 0.02]))
    assert param_columns(TABLE, bottleneck=True)[:3] == ("j", "bottleneck", "rate_lambda")
    bn = suggest(FixedTrial({"j": 4, "bottleneck": 16, "rate_lambda": 0.02, "codec": "zlib", "radio": "wifi"}),
                 space, TABLE)
    assert bn == DesignPoint(4, 8, 1.0, (), "l1", "zlib", "wifi", bottleneck=16, rate_lambda=0.02)
    assert bn.accuracy_key(TABLE) == "j=4;bn=16;lam=0.02" and not bn.pruned
    assert params_of(bn, space, TABLE) == {"j": 4, "bottleneck": 16, "rate_lambda": 0.02, "codec": "zlib",
                                           "radio": "wifi"}
    assert set(distributions_of(params_of(bn, space, TABLE), space, TABLE)["bottleneck"].choices) == {0, 8, 16}
    # bottleneck 0 is the quantized cut as before; a trial stored before the axis existed is one
    old = {"j": 4, "bits": 2, "keep_cut": 1.0, "keep_L0": 1.0, "keep_L2": 1.0, "keep_L4": 1.0, "criterion": "l1",
           "codec": "none",
           "radio": "wifi"}
    assert point_of(old, space, TABLE) == point_of({**old, "bottleneck": 0}, space, TABLE) == point_of(old, SPACE,
                                                                                                         TABLE)
    assert set(distributions_of(old, space, TABLE)) == set(old)
    # no bottleneck where the image or the detections cross, and none outside a space that searches them
    assert suggest(FixedTrial({"j": 6, "codec": "none", "radio": "wifi"}), space, TABLE).bottleneck == 0
    with pytest.raises(ValueError, match="space.bottleneck.latent"):
        params_of(bn, SPACE, TABLE)
    anchors = [p for p in baseline_points(space, TABLE) if p.bottleneck]
    # the widest latent narrower than the cut tensor: j = 1 sends 16 channels, so its anchor is 8 wide
    assert TABLE[1].channels == 16 and all(TABLE[j].channels > 16 for j in range(2, 6))
    assert [(p.j, p.bottleneck, p.rate_lambda) for p in anchors] == [(1, 8, 0.002)] + [(j, 16, 0.002)
                                                                                      for j in range(2, 6)]
    wide = replace(SPACE, bottleneck=replace(SPACE.bottleneck, latent=[16, 32], lambdas=[0.002]))
    assert TABLE[2].channels == 32  # none at j = 1 (no width under 16), 16 at j = 2, 32 beyond
    assert [(p.j, p.bottleneck) for p in baseline_points(wide, TABLE) if p.bottleneck] == [(2, 16), (3, 32), (4, 32),
                                                                                            (5, 32)]


def test_bottleneck_config_errors_are_one_line():
    from search.profiles import ConfigError

    for bad, match in (("space.bottleneck.latent=[0]", "space.bottleneck.latent"),
                       ("space.bottleneck.lambdas=[]", "space.bottleneck.lambdas"),
                       ("train.bottleneck.kernel=2", "train.bottleneck.kernel"),
                       ("train.bottleneck.bits=1", "train.bottleneck.bits")):
        extra = ("space.bottleneck.latent=[8]",) if "lambdas" in bad else ()
        with pytest.raises((ConfigError, ValueError), match=match):
            conf(*extra, bad)


def test_pareto_is_feasible_and_non_dominated(tmp_path):
    study = fake_study()
    all_rows, pareto = study_frames(study, COLUMNS)
    assert len(all_rows) == 4
    assert sorted(pareto["trial"]) == [0, 1]
    assert "energy.compute_mj" in pareto.columns and "latency.radio_ms" in pareto.columns
    paths = export_all(study, tmp_path, COLUMNS)
    html = paths["pareto.html"].read_text()
    assert "<script src=\"http" not in html and "Plotly" in html  # self-contained, opens offline
    assert pd.read_csv(paths["pareto.csv"]).shape[0] == 2
    assert "2 feasible Pareto points" in summary_lines(study, COLUMNS)[0]


def test_figure_info(tmp_path):
    all_rows, pareto = study_frames(fake_study(), COLUMNS)
    fig = pareto_figure(all_rows, pareto, "t")
    names = [t.name for t in fig.data]
    assert names == ["infeasible", "ble5", "Pareto front"]
    assert fig.data[0].marker.color == "lightgrey"
    assert fig.layout.xaxis.type == "log"
