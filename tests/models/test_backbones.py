"""Split and prune on every backbone: yolov3-tiny at all its single-tensor cuts, yolov4-tiny (grouped routes,
concatenation cuts) at all of its own."""

from __future__ import annotations

import pytest
import torch

from models import DetectorConfig, cut_points, prune, split
from models.darknet import Darknet
from tests.models.test_darknet import SMALL

V4 = DetectorConfig("yolov4-tiny", num_classes=1, input_size=160, box="v5")


@pytest.fixture(scope="module")
def v4() -> Darknet:
    torch.manual_seed(0)
    m = Darknet(V4).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a wrong channel would show
        for _, c in m.convs():
            if c.bn is not None:
                c.bn.running_mean.uniform_(-0.5, 0.5)
                c.bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.mark.parametrize("cfg", [V4, DetectorConfig("yolov3-tiny", 2, 96, width=0.25)], ids=["v4", "v3-all-cuts"])
def test_edge_of_node_equals_the_model_at_every_cut(cfg):
    torch.manual_seed(0)
    model = Darknet(cfg).eval()
    table = cut_points(cfg)
    x = torch.rand(2, 3, cfg.input_size, cfg.input_size)
    with torch.no_grad():
        ref = model(x)
        for p in table:
            sm = split(model, p.j, interface=False)
            f = sm.node(x)
            if p.is_split:
                assert tuple(f.shape[1:]) == (p.channels, p.height, p.width) == sm.cut_shape(), p
            for a, b in zip(sm.edge(f), ref, strict=True):
                assert torch.equal(a, b), p
    if cfg.cfg == "yolov3-tiny":
        assert [p.layer for p in table] == [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 23]


def test_v4_cut_table():
    t = cut_points(V4)
    assert [p.layer for p in t] == [-1, 0, 1, 2, 8, 9, 10, 16, 17, 18, 37]
    assert [p.kind for p in t][:2] == ["image", "features"] and t[-1].kind == "detections"
    assert [p.conv for p in t] == [None, 0, 1, 2, None, None, 10, None, None, 18, None]
    assert "route 8" in t[4].note and "[2, 7]" in t[4].note  # a concatenation: no single step-1 conv
    assert t.conv_groups == {2: 2, 10: 2, 18: 2}  # routes 3, 11, 19 take the second half of these
    assert t[9].earlier_convs == (0, 1, 2, 4, 5, 7, 10, 12, 13, 15)
    assert t.refused == {}
    assert t[4].channels == 128 and (t[4].height, t[4].width) == (40, 40)
    assert t[0].node_macs == 0 and t[-1].edge_macs == 0
    assert all(p.node_macs + p.edge_macs == t[0].edge_macs for p in t)
    assert t.kept(2, 0.3) == 20 and t.kept(2, 0.01) == 2 and t.kept(0, 0.3) == 10  # even counts on split convs


def test_v4_pruning_hand_counted_macs_and_the_split_stays_consistent(v4):
    """Conv 2 feeds route 3 (groups=2, group_id=1) and route 8: it loses the same count in both halves, so route 3
    still takes the second half. The pruned network equals the unpruned one with the dropped channels zeroed."""
    sm = split(v4, 3, interface=False)  # cut after conv 2
    done = prune(sm, {2: 0.5, 0: 0.5, 1: 0.5})
    assert done == {2: (64, 32), 0: (32, 16), 1: (64, 32)}
    assert sm.cut_shape() == (32, 40, 40)
    node = sm.macs().node_per_layer
    assert node == {0: 80 * 80 * 16 * 3 * 9, 1: 40 * 40 * 32 * 16 * 9, 2: 40 * 40 * 32 * 32 * 9}
    assert sm.macs().node == 24_883_200
    edge = sm.macs().edge_per_layer
    assert edge[4] == 40 * 40 * 32 * 16 * 9  # route 3: 16 of conv 2's remaining 32 channels
    assert edge[10] == 20 * 20 * 128 * (32 + 64) * 9  # route 8: conv 2 (32) + conv 7 (64), max-pooled

    ref = split(v4, 3, interface=False)
    only = split(v4, 3, interface=False)
    prune(only, {2: 0.5})
    kept_w = only.layer(2).conv.weight.detach()
    full_w = ref.layer(2).conv.weight.detach()
    kept = [int((full_w - w).flatten(1).abs().sum(1).argmin()) for w in kept_w]
    assert sum(k < 32 for k in kept) == sum(k >= 32 for k in kept) == 16
    drop = [c for c in range(64) if c not in kept]
    with torch.no_grad():
        bn = ref.layer(2).bn
        bn.weight[drop] = 0
        bn.bias[drop] = 0  # leaky(0 * x + 0) = 0: the channel is zero everywhere it goes
        x = torch.rand(2, 3, 160, 160)
        for a, b in zip(only(x), ref(x), strict=True):
            assert (a - b).abs().max() < 1e-3 * b.abs().max()  # summation order only; a wrong channel is O(1)


@pytest.mark.parametrize("j", range(1, 10))
def test_v4_prunes_end_to_end_at_every_cut(v4, j):
    t = cut_points(V4)
    p = t[j]
    sm = split(v4, j, bits=2)
    keep = {c: 0.4 for c in p.earlier_convs}
    if p.conv is not None:
        keep[p.conv] = 0.25
    done = prune(sm, keep)
    assert set(done) == set(keep)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        sm.calibrate(x, "cpu", 100.0)
        f = sm.node(x)
        heads = sm(x)
    assert tuple(f.shape[1:]) == sm.cut_shape()
    assert [tuple(h.shape) for h in heads] == [(2, 18, 5, 5), (2, 18, 10, 10)]
    assert sm.macs().node < p.node_macs and sm.macs().node + sm.macs().edge < t[0].edge_macs
    for c, (before, after) in done.items():
        assert after == t.kept(c, keep[c]) and before == t.conv_channels[c]


def test_shortcut_convs_are_refused_with_the_reason(tmp_path):
    cfg = tmp_path / "res.cfg"  # darknet test's small cfg (conv, conv, shortcut) with a stride-2 conv before the head
    cfg.write_text(SMALL.replace("[convolutional]\nfilters=18", "[convolutional]\nbatch_normalize=1\nfilters=16\n"
                                 "size=3\nstride=2\npad=1\nactivation=leaky\n\n[convolutional]\nfilters=18"))
    c = DetectorConfig(str(cfg), 1, 64)
    t = cut_points(c)
    assert set(t.refused) == {0, 1} and "shortcut 2" in t.refused[0]
    p = next(p for p in t if p.layer == 3)
    assert p.conv == 3 and p.earlier_convs == ()
    sm = split(Darknet(c).eval(), p.j)
    with pytest.raises(ValueError, match=r"prune layer 0 .*shortcut 2"):
        prune(sm, {0: 0.5})
