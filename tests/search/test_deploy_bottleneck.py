"""A study that searches learned bottlenecks (space.bottleneck), from the command line to a running split: the
bottleneck anchor is measured and priced like any point, its weights and learned prior are kept, and its deploy
bundle (encoder in node.onnx, decoder in edge.onnx, the prior's tables in interface.json) reproduces the search's
mAP and bytes through the reference runtime."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import onnx
import pytest
import torch

from objectives.design import bottleneck_of
from search.deploy.node import load_images, run
from search.deploy.runtime import Bundle
from search.deploy.store import file_name
from search.record import TrialRecord, front_keys
from tests.search.test_deploy import Server, bundle_dir
from tests.search.test_study import cli, load

# stride 2: the encoder halves the cut's size and edge.onnx's decoder restores it (depth-to-space)
SPACE = ("space.partitions=[3]", "space.bottleneck.latent=[4]", "space.bottleneck.lambdas=[0.01]",
         "space.codecs=[ans,none]", "space.radios=[ble5]", "study.enqueue_baselines=true", "study.n_trials=2",
         "train.bottleneck.stride=2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    studies = tmp_path_factory.mktemp("bn") / "studies"
    cli(studies, *SPACE)
    s = load(studies)
    recs = [(t, TrialRecord.from_trial(t)) for t in s.get_trials()]
    trial = next(t for t, r in recs if r.is_primary and r.accuracy is not None and bottleneck_of(r.accuracy.key))
    p = cli(studies, "mode=deploy", f"deploy.trial={trial.number}", *SPACE)
    return studies, s, trial, p


def test_the_bottleneck_anchor_is_searched_measured_and_kept(study):
    studies, s, trial, _ = study
    rec = TrialRecord.from_trial(trial)
    acc = rec.accuracy
    assert trial.params["bottleneck"] == 4 and trial.params["rate_lambda"] == 0.01 and "bits" not in trial.params
    assert acc.key == "j=3;bn=4;lam=0.01" and acc.cut_shape[0] == 4 and acc.bottleneck_steps == 20  # train/tiny
    assert acc.entropy_table_bytes["ans"] > 0 and acc.payload_mean_bytes["ans"] > 24
    # 4 latent channels at 5 bits against the 8 channels the unsplit cut sends at 8: fewer bytes, and on the front
    plain = next(TrialRecord.from_trial(t).accuracy for t in s.get_trials()
                 if t.params.get("bottleneck") == 0 and TrialRecord.from_trial(t).accuracy is not None)
    assert acc.raw_bytes < plain.raw_bytes and acc.key in front_keys(s)
    assert tuple(acc.cut_shape) == (4, plain.cut_shape[1] // 2, plain.cut_shape[2] // 2)  # stride 2
    blob = torch.load(studies / "quick" / "models" / file_name(acc.key), weights_only=True)
    assert blob["bottleneck"] == {"channels": plain.cut_shape[0], "latent": 4, "bits": 5, "kernel": 3,
                                   "stride": 2}
    assert set(blob["entropy"]) == {"ans"}
    with open(studies / "quick" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"bottleneck", "rate_lambda"} <= set(rows[0]) and any(r["bottleneck"] == "4" for r in rows)


def test_its_bundle_carries_the_bottleneck_and_the_runtime_reproduces_the_search(study):
    studies, _, trial, p = study
    rec = TrialRecord.from_trial(trial)
    folder = bundle_dir(studies, trial.number)
    spec = json.loads((folder / "interface.json").read_text())
    assert spec["bottleneck"]["latent"] == 4 and spec["cut_shape"][0] == 4 and spec["kept_channels"] is None
    assert spec["bits"] == 5 and spec["mu"] == -0.5 and spec["max"] == 16.0
    assert spec["reconstruction_table"] == [float(v) for v in range(-16, 16)]  # the latent's integers
    assert spec["entropy_model"]["kind"] == "ans" and spec["entropy_model"]["channels"] == 4
    assert "## The learned bottleneck" in (readme := (folder / "README.md").read_text())
    assert "stride 2" in readme and "depth-to-space by 2" in readme
    for f in spec["files"].values():
        onnx.checker.check_model(onnx.load(str(folder / f)), full_check=True)
    bundle = Bundle(folder)
    # node.onnx ends in the encoder (a 4-channel latent); edge.onnx starts with the decoder
    assert bundle.sessions["node"].get_outputs()[0].shape[1] == 4
    assert bundle.sessions["edge"].get_inputs()[0].shape[1] == 4
    server = Server(bundle)
    data, labels = load_images(bundle, None, str(studies))
    r = run(bundle, "127.0.0.1", server.port, data, labels)
    assert r["errors"] == 0 and abs(r["mAP50"] - rec.mAP50) <= 0.005, (r["mAP50"], rec.mAP50)
    first = run(bundle, "127.0.0.1", server.port, data, labels, limit=spec["payload_images"])
    assert math.ceil(np.mean(first["sizes"])) == rec.payload_bytes  # the bytes the search priced
