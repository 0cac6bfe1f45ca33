"""The baseline (objectives/baseline.py): k-means anchors and the cached checkpoint."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from objectives.baseline import kmeans_anchors, train_baseline
from tests.objectives.conftest import CFG, DATA, QUICK  # noqa: F401 - the shared tiny model, data and budget


def test_kmeans_anchors_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 12], [20, 40], [40, 25], [60, 60], [90, 120], [150, 100]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    got = kmeans_anchors(wh, 6)
    assert np.allclose(got, centres[np.argsort(centres.prod(1))], rtol=0.05)
    with pytest.raises(ValueError, match="at least 6 boxes"):
        kmeans_anchors(wh[:3], 6)


def test_baseline_cache_reused_and_rebuilt(tmp_path, data):
    dev = torch.device("cpu")
    a = train_baseline(CFG, data, "k1", QUICK, tmp_path, dev, progress=False)
    assert not a.cached and a.path.is_file()
    assert a.model.cfg.anchors != CFG.anchors  # k-means anchors from the data
    b = train_baseline(CFG, data, "k1", QUICK, tmp_path, dev, progress=False)
    assert b.cached
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    a.path.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = train_baseline(CFG, data, "k1", QUICK, tmp_path, dev, progress=False)
    assert not c.cached and any("unusable" in str(x.message) for x in w)
    other = train_baseline(CFG, data, "k2", QUICK, tmp_path, dev, progress=False)
    assert other.path != a.path  # a different data key is a different checkpoint
