"""Predictions, mAP and payloads (objectives/accuracy.py) and the split's chunked calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import TinyYOLOv3, calibrate, split
from objectives.accuracy import ground_truth, payload_stats
from objectives.metrics import average_precision
from tests.objectives.conftest import CFG, DATA, QUICK  # noqa: F401 - the shared tiny model, data and budget


def test_calibration_in_chunks_of_8_gives_the_same_interface(data):
    """Calibration runs the node 8 images at a time on the CPU (faster there: README "Speed"); the
    calibrated interface (mu, max at the 99.9th percentile, centroids) equals the one from whole batches."""
    torch.manual_seed(0)
    model = TinyYOLOv3(CFG).eval()
    x = torch.from_numpy(data.images[:20]).permute(0, 3, 1, 2).float() / 255
    bufs = []
    for chunk in (64, 8, 3):
        sm = split(model, 2, bits=4, recon="centroid")
        sm.calibrate(x, "cpu", 99.9, batch_size=16, chunk=chunk)
        bufs.append({k: v.clone() for k, v in sm.interface.state_dict().items()})
    # multiples of 8 images give bit-identical features here; an odd chunk may differ in the last float bit
    assert all(torch.equal(bufs[0][k], bufs[1][k]) for k in bufs[0])
    assert all(torch.allclose(bufs[0][k], bufs[2][k], rtol=1e-5, atol=1e-6) for k in bufs[0])


def test_payload_stats_real_encoder(data):
    torch.manual_seed(0)
    sm = split(TinyYOLOv3(CFG), 4, bits=1).eval()
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
    st = payload_stats(sm, data, ("none", "zlib", "zstd"))
    c, h, w = sm.cut_shape()
    assert st.raw_bytes == (c * h * w + 7) // 8
    assert st.mean_bytes["none"] == 24 + st.raw_bytes  # header + packed codes, exactly
    assert all(st.max_bytes[k] <= 24 + st.raw_bytes for k in st.max_bytes)  # a codec never expands
    assert 0 <= st.entropy_bytes <= st.raw_bytes + 1e-9
    assert st.best_codec in ("none", "zlib", "zstd")


@pytest.mark.parametrize("bits", [1, 4])
def test_payload_stats_entropy_codecs_are_the_encoders_bytes(data, bits):
    """The entropy codecs' sizes are the framed bodies of the fitted models, image by image; their tables are
    reported; without a fitted model payload_stats refuses."""
    torch.manual_seed(0)
    sm = split(TinyYOLOv3(CFG), 2, bits=bits).eval()
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    sm.calibrate(x, "cpu", 100.0)
    with pytest.raises(ValueError, match="no fitted entropy model"):
        payload_stats(sm, data, ("zlib", "ans_ctx"))
    sm.fit_entropy(x[:32], "cpu", ("ans", "ans_ctx"))
    st = payload_stats(sm, data, ("none", "zlib", "ans", "ans_ctx"))
    iface = sm.interface
    with torch.no_grad():
        codes = iface.quantize(sm.node(x))
    for name in ("ans", "ans_ctx"):
        m = iface.entropy[name]
        sizes = [24 + min(len(m.encode(c.numpy())), st.raw_bytes) for c in codes]
        assert st.mean_bytes[name] == pytest.approx(np.mean(sizes)) and st.max_bytes[name] == max(sizes)
        assert st.table_bytes[name] == m.table_bytes > 0
    assert st.mean_bytes["ans_ctx"] < st.mean_bytes["none"]


def test_evaluate_map_perfect_predictions_score_one(data):
    gts = ground_truth(data, 64)
    dets = [np.c_[g[:, :4], np.full(len(g), 0.9), g[:, 4]] for g in gts]
    assert average_precision(dets, gts, 1).map50 == pytest.approx(1.0)
