from __future__ import annotations

import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config, layer_table
from models.darknet import DarknetMaxPool, run_layers
from models.tiny_yolov3 import DARKNET_ANCHORS, NUM_LAYERS, conv_layer_macs, count_parameters

# docs/tiny_yolov3.md: (H, W, C) and MMAC per darknet layer at 416 px, 80 classes
REFERENCE = [
    (416, 16, 74.8), (208, 16, 0), (208, 32, 199.4), (104, 32, 0), (104, 64, 199.4), (52, 64, 0),
    (52, 128, 199.4), (26, 128, 0), (26, 256, 199.4), (13, 256, 0), (13, 512, 199.4), (13, 512, 0),
    (13, 1024, 797.4), (13, 256, 44.3), (13, 512, 199.4), (13, 255, 22.1), (13, 255, 0), (13, 256, 0),
    (13, 128, 5.5), (26, 128, 0), (26, 384, 0), (26, 256, 598.1), (26, 255, 44.1), (26, 255, 0),
]


@pytest.fixture(scope="module")
def darknet():
    return TinyYOLOv3(TinyYOLOv3Config(num_classes=80, input_size=416)).eval()


def test_full_size_macs_and_parameters(darknet):
    total = sum(t.macs for t in layer_table(darknet.cfg))
    assert total == pytest.approx(2.78e9, rel=0.01)
    assert count_parameters(darknet) == pytest.approx(8.85e6, rel=0.005)
    # the MACs read off the modules agree with the static table
    assert sum(conv_layer_macs(darknet.layers, darknet.cfg).values()) == total


def test_every_layer_matches_reference_table(darknet):
    table = layer_table(darknet.cfg)
    assert len(table) == NUM_LAYERS == 24
    for info, (hw, c, mmac) in zip(table, REFERENCE, strict=True):
        assert info.out_hw == (hw, hw), info
        assert info.out_channels == c, info
        assert info.macs / 1e6 == pytest.approx(mmac, abs=0.06), info


def test_forward_shapes_match_table_for_every_layer(darknet):
    cache: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        _, heads = run_layers(darknet.layers, torch.rand(1, 3, 416, 416), 0, NUM_LAYERS - 1, cache)
    for (hw, c, _), i in zip(REFERENCE, range(NUM_LAYERS), strict=True):
        assert tuple(cache[i].shape) == (1, c, hw, hw), f"layer {i}"
    assert [tuple(h.shape) for h in heads] == [(1, 255, 13, 13), (1, 255, 26, 26)]


def test_layers_addressable_by_darknet_number(darknet):
    assert isinstance(darknet.layers[11], DarknetMaxPool) and darknet.layers[11].stride == 1
    assert darknet.layers[20].sources == (19, 8)
    assert darknet.layers[17].sources == (13,)
    assert darknet.layers[8].conv.out_channels == 256
    assert darknet.layers[15].conv.out_channels == 255 and darknet.layers[15].conv.bias is not None
    assert darknet.layers[15].bn is None and darknet.layers[8].conv.bias is None


@pytest.mark.parametrize("size", [32, 96, 160, 320])
def test_any_multiple_of_32_and_classes(size):
    cfg = TinyYOLOv3Config(num_classes=3, input_size=size, width=0.125)
    heads = TinyYOLOv3(cfg)(torch.rand(2, 3, size, size))
    assert [tuple(h.shape) for h in heads] == [(2, 24, size // 32, size // 32), (2, 24, size // 16, size // 16)]


@pytest.mark.parametrize("bad", [dict(input_size=100), dict(input_size=0), dict(num_classes=0),
                                 dict(width=0), dict(anchors=((1, 2),))])
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError):
        TinyYOLOv3Config(**bad)


def test_anchors_scale_with_input():
    a = TinyYOLOv3Config(input_size=160).scaled_anchors
    assert torch.allclose(a, torch.tensor(DARKNET_ANCHORS, dtype=torch.float32) * 160 / 416)


def test_width_multiplier_scales_non_head_channels():
    cfg = TinyYOLOv3Config(num_classes=1, input_size=64, width=0.5)
    t = layer_table(cfg)
    assert t[0].out_channels == 8 and t[12].out_channels == 512 and t[15].out_channels == 18
