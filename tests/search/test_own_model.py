"""Bring your own detector: the quick study on yolov4-tiny, and a user's darknet cfg + weights (or a PyTorch state
dict) as the baseline - no training, its mAP measured - through the whole search, report and export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from models import Darknet, TinyYOLOv3Config, save_darknet
from models.detector import DetectorConfig, darknet_cfg_text
from objectives.baseline import WeightsError, load_baseline, weights_digest
from objectives.data.synthetic import load as load_set
from search.record import StudyRecord
from tests.helpers import write_yolo
from tests.search.test_study import QUICK, cli, load, primaries


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quick study's own baseline, written out as a user would bring it: cfg + darknet weights + state dict."""
    studies = tmp_path_factory.mktemp("q") / "studies"
    cli(studies)
    ckpt = torch.load(next((studies / "cache").glob("baseline-*.pt")), weights_only=True)
    mcfg = TinyYOLOv3Config(num_classes=1, input_size=64, width=0.125,
                            anchors=tuple(tuple(a) for a in ckpt["anchors"]))
    model = Darknet(mcfg)
    model.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():  # darknet's batch-norm epsilon is 1e-5, this project's recipe 1e-4: fold the difference
        for _, c in model.convs():
            if c.bn is not None:
                c.bn.running_var += c.bn.eps - 1e-5
    root = studies.parent / "mine"
    root.mkdir()
    for split in ("train", "val"):  # the quick study's data as a user's YOLO folder
        ds = load_set(next((studies / "cache").glob(f"synthetic-*-{split}.npz")))
        write_yolo(ds, root / "images" / split, root / "labels" / split)
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [foot]\n")
    (root / "feet.cfg").write_text(darknet_cfg_text(mcfg))
    save_darknet(model, root / "feet.weights")
    torch.save(model.state_dict(), root / "feet.pt")
    return studies, root, StudyRecord.of(load(studies)).baseline_mAP50


@pytest.mark.parametrize("weights,data", [("feet.weights", "yolo"), ("feet.pt", "tiny")])
def test_users_weights_are_the_baseline(trained, tmp_path, weights, data):
    src, root, trained_map = trained
    studies = tmp_path / "studies"
    data_args = ["data=yolo", f"data.data_yaml={root / 'data.yaml'}", "data.size=64"] if data == "yolo" else []
    wpath = tmp_path / weights
    shutil.copy(root / weights, wpath)
    p = cli(studies, "model=darknet", f"model.cfg={root / 'feet.cfg'}", f"model.weights={wpath}",
            "model.box=v5", "study.n_trials=2", *data_args)
    assert not list((studies / "cache").glob("baseline-*.pt"))  # nothing was trained
    rec = StudyRecord.of(load(studies))
    # the same network, measured on the same validation set: the trained baseline's mAP
    assert rec.baseline_mAP50 == pytest.approx(trained_map, abs=2e-3)
    digest = weights_digest(wpath)
    assert rec.model == f"feet.cfg + {weights} (sha256 {digest})" and len(digest) == 12
    assert f"model feet.cfg + {weights}" in p.stdout and "given weights, measured" in p.stdout
    meta = json.loads((studies / "quick" / "pareto.json").read_text())
    assert meta["model"] == rec.model and meta["baseline_mAP50"] == rec.baseline_mAP50
    assert "feet.cfg" in (studies / "quick" / "report.html").read_text()
    assert len(primaries(load(studies))) == 2
    if weights == "feet.pt":  # other weights under the same path are other settings: the study says so
        sd = torch.load(wpath, weights_only=True)
        sd["layers.0.0.weight"] = sd["layers.0.0.weight"] * 0.5
        torch.save(sd, wpath)
        p = cli(studies, "model=darknet", f"model.cfg={root / 'feet.cfg'}", f"model.weights={wpath}",
                "model.box=v5", "study.n_trials=2", *data_args)
        assert "settings differ from those this study's trials were measured with" in p.stdout + p.stderr
        new = weights_digest(wpath)
        assert new != digest and StudyRecord.of(load(studies)).model.endswith(f"(sha256 {new})")


def test_quick_study_on_yolov4_tiny(tmp_path):
    studies = tmp_path / "studies"
    p = cli(studies, "model=yolov4_tiny", "model.width=0.125", "study.n_trials=4")
    study = load(studies)
    rec = StudyRecord.of(study)
    assert rec.node_j == 10 and rec.model.startswith("yolov4-tiny.cfg trained here")
    assert "11 cut points" in p.stdout
    prim = primaries(study)
    assert len(prim) == 4 and all(0 <= t.params["j"] <= 10 for t in prim)
    for t in prim:
        assert t.user_attrs["mAP50"] >= 0 and t.values[0] > 0
    cols = open(studies / "quick" / "trials.csv").readline().strip().split(",")
    assert {"keep_L15", "keep_L12", "keep_L0"} <= set(cols)  # yolov4-tiny's step-2 convs


def test_weights_that_do_not_fit_are_one_line(trained, tmp_path):
    _, root, _ = trained
    cfg = DetectorConfig(str(root / "feet.cfg"), 1, 64, box="v5")
    with pytest.raises(WeightsError, match=r"feet\.cfg has classes=1 in its \[yolo\] layers but the data has 2"):
        load_baseline(cfg, root / "feet.weights", ["foot", "shoe"])
    sd = torch.load(root / "feet.pt", weights_only=True)
    sd.pop("layers.0.0.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"missing keys \['layers\.0\.0\.weight'\], unexpected keys \['extra\.weight'\]"):
        load_baseline(cfg, tmp_path / "bad.pt", ["foot"])
    (tmp_path / "v4.cfg").write_text(darknet_cfg_text(DetectorConfig("yolov4-tiny", 1, 64, width=0.125)))
    v4 = DetectorConfig(str(tmp_path / "v4.cfg"), 1, 64)
    with pytest.raises(WeightsError, match=r"feet\.pt does not fit v4\.cfg: missing keys \['layers\.1\.0\.weight'.*unexpected keys \['layers\.6\.0\.weight'"):
        load_baseline(v4, root / "feet.pt", ["foot"])
    (tmp_path / "wide.cfg").write_text(darknet_cfg_text(TinyYOLOv3Config(1, 64, width=0.25)))
    with pytest.raises(WeightsError, match=r"feet\.pt: layers\.0\.0\.weight has shape \(2, 3, 3, 3\), wide\.cfg at 1 "
                                           r"classes needs \(4, 3, 3, 3\)"):
        load_baseline(DetectorConfig(str(tmp_path / "wide.cfg"), 1, 64), root / "feet.pt", ["foot"])
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match=r"junk\.pt'?: not a PyTorch state dict"):
        load_baseline(cfg, tmp_path / "junk.pt", ["foot"])
    # the CLI: exit 2 and one line naming the files, for a darknet file of the wrong length
    (tmp_path / "short.weights").write_bytes((root / "feet.weights").read_bytes()[:-8])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "search", *QUICK, f"studies_dir={tmp_path / 's'}", "model=darknet",
                        f"model.cfg={root / 'feet.cfg'}", f"model.weights={tmp_path / 'short.weights'}"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "short.weights" in err[0] and "the file holds" in err[0], r.stderr
