from __future__ import annotations

import pytest
import torch

from models import PARTITIONS, TinyYOLOv3, TinyYOLOv3Config, cut_points, split


@pytest.fixture(scope="module")
def darknet():
    torch.manual_seed(0)
    return TinyYOLOv3(TinyYOLOv3Config(num_classes=80, input_size=416)).eval()


def test_edge_of_node_equals_unsplit_model_for_every_j(darknet):
    x = torch.rand(1, 3, 416, 416)
    with torch.no_grad():
        full = darknet(x)
        for j in PARTITIONS:
            sm = split(darknet, j, interface=False).eval()
            out = sm.edge(sm.interface(sm.node(x)))
            assert len(out) == 2
            for a, b in zip(out, full, strict=True):
                assert torch.equal(a, b), f"j={j}"


def test_cut_point_metadata_without_running(darknet):
    pts = {p.j: p for p in cut_points(darknet.cfg)}
    assert [pts[j].layer for j in PARTITIONS] == [-1, 1, 3, 5, 7, 8, 23]
    assert [(pts[j].channels, pts[j].height) for j in range(6)] == [
        (3, 416), (16, 208), (32, 104), (64, 52), (128, 26), (256, 26)]
    # payload values from the reference table
    assert [pts[j].values for j in range(1, 6)] == [692224, 346112, 173056, 86528, 173056]
    assert pts[0].node_macs == 0 and pts[6].edge_macs == 0
    # step-1 and step-2 targets per j (darknet numbering), strides, and the unpruned channels of each target
    assert [pts[j].conv for j in PARTITIONS] == [None, 0, 2, 4, 6, 8, None]
    assert [pts[j].earlier_convs for j in PARTITIONS] == [(), (), (0,), (0, 2), (0, 2, 4), (0, 2, 4, 6), ()]
    assert [pts[j].stride for j in PARTITIONS] == [1, 2, 4, 8, 16, 16, 16]
    assert [pts[j].is_split for j in PARTITIONS] == [False, True, True, True, True, True, False]
    assert [j for j in PARTITIONS if pts[j].sends_image] == [0] and [j for j in PARTITIONS if pts[j].sends_detections] == [6]
    table = cut_points(darknet.cfg)
    assert table.conv_channels == {0: 16, 2: 32, 4: 64, 6: 128, 8: 256}
    assert table.earlier_convs == (0, 2, 4, 6) and table.prunable_convs == (0, 2, 4, 6, 8)
    assert all(p.node_macs + p.edge_macs == pts[0].edge_macs for p in pts.values())


def test_cut_metadata_matches_forward(small_model):
    x = torch.rand(1, 3, 160, 160)
    for p in cut_points(small_model.cfg):
        if p.j in (0, 6):
            continue
        sm = split(small_model, p.j)
        assert tuple(sm.node(x).shape[1:]) == (p.channels, p.height, p.width) == sm.cut_shape()
        assert sm.macs().node == p.node_macs and sm.macs().edge == p.edge_macs


def test_split_keeps_baseline_and_layer_numbers(small_model):
    before = {k: v.clone() for k, v in small_model.state_dict().items()}
    sm = split(small_model, 3)
    with torch.no_grad():
        for p in sm.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in small_model.state_dict().items())
    assert sorted(int(k) for k in sm.node.layers) == list(range(5 + 1))  # j=3 cuts after max-pool 5
    assert sorted(int(k) for k in sm.edge.layers) == list(range(5 + 1, 24))
    assert "node.layers.4.0.weight" in sm.state_dict() and "edge.layers.21.0.weight" in sm.state_dict()


@pytest.mark.parametrize("j", [-1, 7, 2.0, "3", True])
def test_bad_partition(small_model, j):
    with pytest.raises(ValueError, match="partition"):
        split(small_model, j)
