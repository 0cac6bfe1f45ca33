from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config, cut_points
from models.codec import HEADER_BYTES
from objectives.data.synthetic import SyntheticConfig, generate
from objectives.design import DesignPoint
from objectives.fit import fit
from objectives.objective import AccuracyResult, EvalSettings, constraint_value, evaluate_accuracy, node_work
from tests.helpers import conf, train_cfg

CFG = TinyYOLOv3Config(num_classes=1, input_size=64, width=0.125)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = generate(SyntheticConfig(size=64, n_train=16, n_val=8, seed=2, min_foot=12, max_foot=30), "train", workers=1)
    return TinyYOLOv3(CFG).eval(), data


def settings(codecs=("none", "zlib"), finetune=None) -> EvalSettings:
    rc = conf()
    ev = replace(rc.eval, calib_images=16, payload_images=8, before_finetune=True)
    train = replace(rc.train, finetune=finetune or rc.train.finetune, finetune_enabled=finetune is not None)
    return EvalSettings(ev, rc.model, train, codecs, measure_edge=False, progress=False)


S = settings()


def test_all_in_edge_sends_the_image(setup):
    base, data = setup
    acc = evaluate_accuracy(DesignPoint(0), base, data, data, S, torch.device("cpu"))
    assert acc.node_macs == 0 and acc.feature_values == 0 and acc.raw_bytes == 3 * 64 * 64
    assert acc.payload_mean_bytes["none"] == HEADER_BYTES + 3 * 64 * 64
    assert acc.payload_mean_bytes["zlib"] <= acc.payload_mean_bytes["none"]


def test_all_in_node_sends_detections(setup):
    base, data = setup
    acc = evaluate_accuracy(DesignPoint(6), base, data, data, S, torch.device("cpu"))
    assert acc.edge_macs == 0 and acc.node_macs > 0 and acc.feature_values == 0
    assert acc.payload_mean_bytes["none"] >= HEADER_BYTES  # 24 B header + 12 B per detection
    # the mean over the 8 payload images of 24 B header + 12 B per detection: the body bytes of all 8 payloads
    # together are a whole number of 12-byte rows
    body = (acc.payload_mean_bytes["none"] - HEADER_BYTES) * 8
    assert body == pytest.approx(round(body), abs=1e-6) and round(body) % 12 == 0
    assert acc.raw_bytes % 12 == 0 and acc.raw_bytes <= 100 * 12  # the largest detection list, at most max_det rows


def test_split_point_pruned_and_finetuned(setup):
    base, data = setup
    s = settings(("none", "zlib", "zstd"), train_cfg(steps=3, batch_size=8, warmup_epochs=0.0))
    p = DesignPoint(3, bits=2, cut_keep=0.5, layer_keep=((0, 0.5), (2, 1.0)))
    acc = evaluate_accuracy(p, base, data, data, s, torch.device("cpu"))
    c, h, w = acc.cut_shape
    assert (c, h, w) == (4, 8, 8)  # 8 channels at width 0.125, half kept, 64 px / 8
    assert acc.feature_values == 4 * 8 * 8 and acc.raw_bytes == math.ceil(4 * 8 * 8 * 2 / 8)
    assert acc.payload_mean_bytes["none"] == HEADER_BYTES + acc.raw_bytes
    assert acc.kept_channels == {"4": [8, 4], "0": [2, 1]}
    assert acc.finetune_steps == 3 and acc.key == p.accuracy_key(cut_points(base.cfg))
    assert acc.key == "j=3;b=2;cut=4/8;L=[0:1/2,2:4/4];crit=l1"  # width 0.125: convs 0, 2, 4 have 2, 4, 8
    # every phase is timed once it ran, and the phases add up to the trial (they are consecutive laps)
    assert set(acc.phase_seconds) == {"calibrate", "prune", "evaluate", "finetune", "payload", "macs_memory"}
    assert acc.phase_seconds["finetune"] >= acc.finetune_seconds > 0
    assert sum(acc.phase_seconds.values()) == pytest.approx(acc.seconds, abs=0.05)
    # round-trips through trial user attrs
    again = AccuracyResult.from_attrs(acc.as_attrs())
    assert again == acc
    w_ = node_work(acc, "zlib")
    assert w_.payload_bytes == math.ceil(acc.payload_mean_bytes["zlib"]) and w_.node_macs == acc.node_macs
    with pytest.raises(ValueError, match="was not measured"):
        node_work(acc, "lzma")


def needed(required, precheck_images=0, margin=0.0, finetune=None) -> EvalSettings:
    """``train.finetune_when=needed`` with the constraint requiring ``required`` mAP@0.5 (no full score before
    fine-tuning unless the policy asks for it)."""
    rc = conf()
    ev = replace(rc.eval, calib_images=16, payload_images=8, before_finetune=False, precheck_images=precheck_images,
                 precheck_margin=margin)
    train = replace(rc.train, finetune=finetune or train_cfg(steps=3, batch_size=8, warmup_epochs=0.0),
                    finetune_when="needed")
    return EvalSettings(ev, rc.model, train, ("none",), measure_edge=False, progress=False, required_map50=required)


@pytest.fixture(scope="module")
def trained(setup):
    """The tiny model trained for 200 steps on its 16 images (mAP@0.5 ~0.08: a score that is not 0)."""
    _, data = setup
    torch.manual_seed(0)
    cfg = train_cfg("baseline", steps=200, batch_size=8, lr=0.01, warmup_epochs=0.0, ema_decay=0.9, max_minutes=0)
    model, _ = fit(TinyYOLOv3(CFG), CFG.head(), CFG.input_size, data, cfg, torch.device("cpu"), progress=False)
    return model.eval(), data


def test_finetune_when_needed_keeps_a_model_that_meets_the_constraint(trained):
    base, data = trained
    cpu, p, n = torch.device("cpu"), DesignPoint(1, bits=8, cut_keep=0.5), len(data.images)
    ref = evaluate_accuracy(p, base, data, data, settings(finetune=train_cfg(steps=3, batch_size=8, warmup_epochs=0.0)),
                            cpu)  # always fine-tuned, scored before and after
    assert ref.finetune_steps == 3 and not ref.finetune_skipped and ref.map50_before_finetune > 0.01
    met = evaluate_accuracy(p, base, data, data, needed(required=ref.map50_before_finetune), cpu)  # just met
    assert met.finetune_skipped and met.finetune_steps == 0 and met.finetune_seconds == 0.0
    assert "finetune" not in met.phase_seconds
    # the stored score is the un-fine-tuned model's, on the full validation set: what `always` scores before
    assert met.map50 == met.map50_before_finetune == ref.map50_before_finetune
    assert met.payload_mean_bytes["none"] == ref.payload_mean_bytes["none"]
    # just missed: scored first, then fine-tuned exactly as `always` does
    missed = evaluate_accuracy(p, base, data, data, needed(required=ref.map50_before_finetune + 1e-9), cpu)
    assert not missed.finetune_skipped and missed.finetune_steps == 3
    assert missed.map50_before_finetune == ref.map50_before_finetune and missed.map50 == ref.map50
    # the subset check: on 4 of the validation images no score is more than 0 below 1.01 (mAP <= 1), so the full
    # set is not scored before fine-tuning; with as many subset images as the set has, the full set is scored
    quick = evaluate_accuracy(p, base, data, data, needed(required=1.01, precheck_images=4, margin=0.0), cpu)
    assert math.isnan(quick.map50_before_finetune) and quick.finetune_steps == 3 and quick.map50 == ref.map50
    whole = evaluate_accuracy(p, base, data, data, needed(required=1.01, precheck_images=n), cpu)
    assert whole.map50_before_finetune == ref.map50_before_finetune and whole.finetune_steps == 3
    # a subset estimate within the margin goes on to the full set, which decides (a margin of 1 passes any subset)
    near = evaluate_accuracy(p, base, data, data, needed(required=ref.map50_before_finetune, precheck_images=4,
                                                          margin=1.0), cpu)
    assert near.finetune_skipped and near.map50 == ref.map50_before_finetune
    # no requirement (the final training, the design table): always fine-tuned
    plain = evaluate_accuracy(p, base, data, data, needed(required=None), cpu)
    assert not plain.finetune_skipped and plain.finetune_steps == 3 and math.isnan(plain.map50_before_finetune)
    assert AccuracyResult.from_attrs(met.as_attrs()) == met


def test_accuracy_key_ignores_cost_axes_and_counts_channels():
    ch = cut_points(TinyYOLOv3Config(num_classes=1, input_size=160))
    assert ch.conv_channels == {0: 16, 2: 32, 4: 64, 6: 128, 8: 256}
    a = DesignPoint(3, 1, 0.5, ((0, 1.0),), "l1", "zlib", "ble5")
    b = DesignPoint(3, 1, 0.5, ((0, 1.0),), "l1", "none", "wifi")
    assert a.accuracy_key(ch) == b.accuracy_key(ch) == "j=3;b=1;cut=32/64;L=[0:16/16];crit=l1"
    assert DesignPoint(3, 2, 0.5).accuracy_key(ch) != DesignPoint(3, 1, 0.5).accuracy_key(ch)
    assert DesignPoint(0, radio="x").accuracy_key(ch) == DesignPoint(0).accuracy_key(ch) == "j=0"
    # ratios that keep the same channels are one model (3 of 16 at j=1: 0.174, 0.203 and 0.212 all round to 3)
    assert len({DesignPoint(1, 8, r).accuracy_key(ch) for r in (0.174, 0.203, 0.212)}) == 1
    assert DesignPoint(1, 8, 0.25).accuracy_key(ch) != DesignPoint(1, 8, 0.203).accuracy_key(ch)
    # a ratio that keeps every channel is the unpruned model, whatever the criterion
    assert DesignPoint(2, 1, 0.99, (), "taylor").accuracy_key(ch) == DesignPoint(2, 1, 1.0).accuracy_key(ch)
    assert a.keep_map(ch) == {4: 0.5}


def test_constraint_value_sign():
    assert constraint_value(0.90, 0.92, 0.05) < 0  # feasible
    assert constraint_value(0.85, 0.92, 0.05) > 0


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_coded_image_bytes_are_the_encoder_files_and_its_map_is_the_decoded_images(trained, codec):
    """j=0 with a lossy codec: bytes = the library's files + the frame header; mAP = the baseline scored on the
    decoded images; fine-tuned (on decoded images) only where it misses the constraint, like a split."""
    import numpy as np

    from models.image_codec import get_image_codec, roundtrip
    from objectives.accuracy import evaluate_map
    from objectives.data.images import ImageSet

    base, data = trained
    cpu, p = torch.device("cpu"), DesignPoint(0, image_codec=codec, quality=20)
    assert p.accuracy_key(cut_points(base.cfg)) == f"j=0;img={codec};q=20"
    acc = evaluate_accuracy(p, base, data, data, needed(required=0.0), cpu)
    files = [len(get_image_codec(codec).encode(img, 20)) for img in data.images[:8]]
    assert acc.payload_mean_bytes["none"] == pytest.approx(HEADER_BYTES + np.mean(files), abs=1e-9)
    assert acc.raw_bytes == math.ceil(np.mean(files)) and acc.node_macs == 0 and acc.feature_values == 0
    assert acc.image_codec == codec and acc.quality == 20 and acc.finetune_skipped
    decoded = ImageSet(roundtrip(data.images, codec, 20), data.labels, data.class_names)
    ref = evaluate_map(base, decoded, base.cfg.head(), base.cfg.input_size, conf().eval.conf_threshold,
                       conf().eval.nms_iou, cpu)
    assert acc.map50 == ref.map50 and acc.map50_95 == ref.map50_95
    raw = evaluate_accuracy(DesignPoint(0), base, data, data, needed(required=0.0), cpu)
    assert acc.payload_mean_bytes["none"] < raw.payload_mean_bytes["none"] / 3
    # below the requirement: the edge model is fine-tuned on decoded images with the split's budget and recipe
    tuned = evaluate_accuracy(p, base, data, data, needed(required=1.01), cpu)
    assert tuned.finetune_steps == 3 and not tuned.finetune_skipped and tuned.map50_before_finetune == acc.map50
    assert tuned.payload_mean_bytes == acc.payload_mean_bytes  # the node's encoder is not trained
