"""Darknet cfg parser, network builder and weights files: the embedded yolov3-tiny / yolov4-tiny against
darknet's own figures and the built-in Tiny-YOLOv3, weights round trips and refusals, and parser errors. Every
cfg and weights file is built here; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config, layer_table
from models.darknet import Darknet, DarknetConv
from models.darknet_cfg import DarknetError, layer_specs, parse_cfg, single_tensor_cuts
from models.darknet_weights import load_darknet, read_weights, save_darknet

CFG_DIR = Path(__file__).resolve().parents[2] / "models" / "cfg"
V3, V4 = CFG_DIR / "yolov3-tiny.cfg", CFG_DIR / "yolov4-tiny.cfg"

# darknet's printed summary of yolov4-tiny at 416 px (layer: kind, C, H): 38 layers, two yolo heads
V4_SHAPES = [("convolutional", 32, 208), ("convolutional", 64, 104), ("convolutional", 64, 104), ("route", 32, 104),
             ("convolutional", 32, 104), ("convolutional", 32, 104), ("route", 64, 104), ("convolutional", 64, 104),
             ("route", 128, 104), ("maxpool", 128, 52), ("convolutional", 128, 52), ("route", 64, 52),
             ("convolutional", 64, 52), ("convolutional", 64, 52), ("route", 128, 52), ("convolutional", 128, 52),
             ("route", 256, 52), ("maxpool", 256, 26), ("convolutional", 256, 26), ("route", 128, 26),
             ("convolutional", 128, 26), ("convolutional", 128, 26), ("route", 256, 26), ("convolutional", 256, 26),
             ("route", 512, 26), ("maxpool", 512, 13), ("convolutional", 512, 13), ("convolutional", 256, 13),
             ("convolutional", 512, 13), ("convolutional", 255, 13), ("yolo", 255, 13), ("route", 256, 13),
             ("convolutional", 128, 13), ("upsample", 128, 26), ("route", 384, 26), ("convolutional", 256, 26),
             ("convolutional", 255, 26), ("yolo", 255, 26)]


def test_yolov3_tiny_cfg_is_the_built_in_network():
    specs = layer_specs(parse_cfg(V3))
    table = layer_table(TinyYOLOv3Config())  # 416 px, 80 classes
    assert [(s.out[0], s.out[1:]) for s in specs] == [(t.out_channels, t.out_hw) for t in table]
    assert sum(s.macs for s in specs) == sum(t.macs for t in table) == 2_782_480_896
    model = Darknet(parse_cfg(V3))
    assert sum(p.numel() for p in model.parameters()) == 8_852_366


def test_the_built_in_tiny_yolov3_is_darknets_cfg_with_this_projects_settings():
    """TinyYOLOv3 is the embedded yolov3-tiny.cfg: a darknet-loaded network takes its state dict as is and, with
    the same batch-norm epsilon, gives bit-identical outputs; only the decoding settings differ."""
    torch.manual_seed(0)
    ref = TinyYOLOv3(TinyYOLOv3Config(num_classes=2, input_size=128)).eval()
    dn = Darknet(parse_cfg(V3), size=128, num_classes=2).eval()
    assert ref.layers[0].bn.eps == 1e-4 and dn.layers[0].bn.eps == 1e-5
    with torch.no_grad():
        for bn in (ref.layers[0][1], ref.layers[13][1]):
            bn.running_mean.uniform_(-1, 1)
        dn.load_state_dict(ref.state_dict())
        for (_, a), (_, b) in zip(dn.convs(), ref.convs(), strict=True):
            if a.bn is not None:
                a.bn.eps = b.bn.eps
        x = torch.rand(2, 3, 128, 128)
        for a, b in zip(dn(x), ref(x), strict=True):
            assert torch.equal(a, b)
    assert ref.cfg.box == "v5" and ref.cfg.head().scale_xy == 2.0
    assert dn.cfg.box == "darknet" and dn.cfg.head().scale_xy == (1.0, 1.0)
    assert ref.cfg.head().masks == dn.cfg.head().masks == ((3, 4, 5), (0, 1, 2))


def test_yolov4_tiny_shapes_macs_and_params_as_darknet_prints():
    specs = layer_specs(parse_cfg(V4))
    assert [(s.kind, s.out[0], s.out[1]) for s in specs] == V4_SHAPES
    assert sum(s.macs for s in specs) == pytest.approx(3.454e9, rel=0.01)  # darknet: 6.91 BFLOPs = 2 x MACs
    model = Darknet(parse_cfg(V4), size=160, num_classes=3).eval()
    heads = model(torch.rand(1, 3, 160, 160))
    assert [tuple(h.shape) for h in heads] == [(1, 24, 5, 5), (1, 24, 10, 10)]  # 3 anchors x (5 + 3 classes)
    yolo = [m for m in model.layers if m.__class__.__name__ == "YoloLayer"]
    assert [y.mask for y in yolo] == [(3, 4, 5), (1, 2, 3)] and yolo[0].scale_x_y == 1.05
    assert yolo[0].anchors[0] == (10, 14) and len(yolo[0].anchors) == 6


def test_grouped_route_takes_the_second_half_of_the_channels():
    model = Darknet(parse_cfg(V4), size=64).eval()
    feats = {}
    model.layers[2].register_forward_hook(lambda m, i, o: feats.__setitem__(2, o))
    model.layers[3].register_forward_hook(lambda m, i, o: feats.__setitem__(3, o))
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert torch.equal(feats[3], feats[2][:, 32:])  # groups=2, group_id=1 of layer 2's 64 channels


def test_cut_points_from_the_graph():
    """Positions where exactly one tensor crosses from node to edge (no route spans them, no head is already
    made on the node): yolov3-tiny keeps the paper's j = 0..6 (-1, 1, 3, 5, 7, 8, 23) among them."""
    v3 = single_tensor_cuts(layer_specs(parse_cfg(V3)))
    assert v3 == [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 23]
    assert {-1, 1, 3, 5, 7, 8, 23} <= set(v3)
    assert single_tensor_cuts(layer_specs(parse_cfg(V4))) == [-1, 0, 1, 2, 8, 9, 10, 16, 17, 18, 37]


# ---------------------------------------------------------------------------------------------- weights
SMALL = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def small(tmp_path: Path) -> Path:
    p = tmp_path / "small.cfg"
    p.write_text(SMALL)
    return p


def randomize(model: Darknet) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*model.parameters(), *model.buffers()]:
            if p.dtype.is_floating_point:
                p.copy_(torch.rand(p.shape, generator=g) + 0.1)


@pytest.mark.parametrize("version,header", [((0, 2, 5), 20), ((0, 1, 0), 16), ((1, 0, 0), 20)])
def test_weights_round_trip_is_bit_exact(tmp_path, version, header):
    cfg = small(tmp_path)
    a = load_darknet(cfg)
    randomize(a)
    path = save_darknet(a, tmp_path / "w.weights", version=version, seen=123456)
    n_floats = sum(t.numel() for _, m in a.convs() for t in m.state_dict().values() if t.dtype.is_floating_point)
    assert path.stat().st_size == header + 4 * n_floats  # seen is int64 from version 0.2 on
    b = load_darknet(cfg, path)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    assert read_weights(b, path) == dict(zip(("major", "minor", "revision"), version, strict=True), seen=123456)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.eval()(x)[0], b(x)[0])


def test_weights_order_is_darknets(tmp_path):
    """BN biases, scales, rolling mean, rolling variance, conv weights; a conv without BN: biases, weights."""
    cfg = small(tmp_path)
    m = load_darknet(cfg)
    counts = [8, 8, 8, 8, 8 * 3 * 9, 8, 8, 8, 8, 8 * 8 * 9, 18, 18 * 8]
    body = np.arange(sum(counts), dtype="<f4")
    path = tmp_path / "ordered.weights"
    path.write_bytes(np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes() + body.tobytes())
    read_weights(m, path)
    first = m.layers[0]
    assert torch.equal(first.bn.bias, torch.arange(0, 8.0)) and torch.equal(first.bn.weight, torch.arange(8, 16.0))
    assert torch.equal(first.bn.running_var, torch.arange(24, 32.0))
    assert first.conv.weight.flatten()[0] == 32
    head = m.layers[3]
    assert head.conv.bias[0] == sum(counts[:10]) and head.conv.weight.flatten()[-1] == sum(counts) - 1


@pytest.mark.parametrize("cut,extra", [(4, b""), (0, b"\0\0\0\0"), (0, b"\0\0"), (400, b"")])
def test_truncated_or_oversized_weights_are_refused(tmp_path, cut, extra):
    cfg = small(tmp_path)
    m = load_darknet(cfg)
    good = save_darknet(m, tmp_path / "w.weights").read_bytes()
    bad = tmp_path / "bad.weights"
    bad.write_bytes(good[:len(good) - cut] + extra)
    n = (len(good) - 20) // 4
    with pytest.raises(DarknetError) as e:
        read_weights(m, bad)
    msg = str(e.value)
    assert "\n" not in msg and f"needs {n} floats" in msg and str(bad) in msg
    body = len(good) - 20 - cut + len(extra)
    assert msg.endswith(f"holds {body // 4}" if body % 4 == 0 else f"holds {body / 4:.2f}")


def test_weights_of_another_cfg_are_refused(tmp_path):
    v4 = load_darknet(V4, size=64)
    path = save_darknet(Darknet(parse_cfg(V3), size=64), tmp_path / "v3.weights")
    with pytest.raises(DarknetError, match=r"the cfg yolov4-tiny needs 6\d{6} floats .* holds 8\d{6}"):
        read_weights(v4, path)


# ---------------------------------------------------------------------------------------------- parser errors
@pytest.mark.parametrize("edit,match", [
    (("[shortcut]", "[dropout]"), r"small\.cfg:\d+: \[dropout\] is not a supported section"),
    (("activation=mish", "activation=swish"), r"small\.cfg:\d+: \[convolutional\] activation='swish' not in"),
    (("stride=2", "stride=2\nbogus=1"), r"small\.cfg:\d+: \[convolutional\] unknown key 'bogus'"),
    (("from=-2", "from=5"), r"small\.cfg:\d+: \[shortcut\] layer 2 refers to layer 5"),
    (("filters=18", "filters=17"), r"\[yolo\] expects 3 x \(5 \+ 1\) = 18 channels from layer 3, which has 17"),
    (("mask=0,1,2", "mask=0,1,7"), r"\[yolo\] mask=\[0, 1, 7\] does not index anchors"),
    (("[net]", "[network]"), r"\[network\] is not a supported section"),
])
def test_bad_cfg_is_one_line_naming_file_line_and_section(tmp_path, edit, match):
    p = tmp_path / "small.cfg"
    p.write_text(SMALL.replace(*edit, 1))
    with pytest.raises(DarknetError, match=match) as e:
        parse_cfg(p)
    assert "\n" not in str(e.value)


def test_small_cfg_runs_shortcut_and_mish(tmp_path):
    m = load_darknet(small(tmp_path))
    assert isinstance(m.layers[0], DarknetConv) and isinstance(m.layers[0][2], torch.nn.Mish)
    feats = {}
    for i in (0, 1, 2):
        m.layers[i].register_forward_hook(lambda mod, inp, out, i=i: feats.__setitem__(i, out))
    with torch.no_grad():
        (head,) = m(torch.rand(1, 3, 64, 64))
    assert torch.equal(feats[2], feats[1] + feats[0]) and head.shape == (1, 18, 32, 32)


def test_darknet_decoding_follows_darknets_formulas():
    from models.yolo import YOLOHeadConfig, decode, postprocess

    model = load_darknet(V4, size=160, num_classes=2)
    head = model.cfg.head()
    assert (head.strides, head.scale_xy, head.num_classes, head.box) == ((32, 16), (1.05, 1.05), 2, "darknet")
    scale = 160 / 416  # anchors are pixels at the cfg's width and scale with the input
    assert torch.allclose(head.head_anchors(0), torch.tensor([[81.0, 82], [135, 169], [344, 319]]) * scale)
    assert torch.allclose(head.head_anchors(1), torch.tensor([[23.0, 27], [37, 58], [81, 82]]) * scale)  # mask 1,2,3
    # one head, 1 anchor, 1 class, 2x2 grid: cell (x=1, y=0) carries tx=logit(0.8), tw=log(2)
    one = YOLOHeadConfig(1, ((10.0, 20.0),), masks=((0,),), strides=(8,), scale_xy=1.05, box="darknet")
    p = torch.zeros(1, 6, 2, 2)
    p[0, 0, 0, 1] = torch.logit(torch.tensor(0.8))
    p[0, 2, 0, 1] = torch.log(torch.tensor(2.0))
    d = decode([p], one)[0]
    assert d.shape == (4, 6)
    cx = (0.8 * 1.05 - 0.025 + 1) * 8
    assert torch.allclose(d[1, :4], torch.tensor([cx - 10, 4 - 10, cx + 10, 4 + 10]))  # w = 2 x 10, h = 20
    assert torch.allclose(d[0, :4], torch.tensor([4.0 - 5, 4 - 10, 4 + 5, 4 + 10]))  # zero logits: cell centre
    assert torch.allclose(d[:, 4:], torch.full((4, 2), 0.5))
    with torch.no_grad():
        dets = postprocess(decode(model(torch.rand(2, 3, 160, 160)), head), conf_threshold=0.0, max_det=7)
    assert len(dets) == 2 and all(x.shape == (7, 6) for x in dets)  # (5 x 5 + 10 x 10) x 3 candidates each


@pytest.mark.parametrize("size,stride,hw", [(2, 1, 13), (2, 2, 26), (2, 2, 13), (3, 1, 10), (3, 2, 9), (5, 1, 7)])
def test_maxpool_equals_darknets_minus_inf_padding(size, stride, hw):
    from models.darknet import DarknetMaxPool

    x = torch.randn(2, 3, hw, hw)
    pad = size - 1  # darknet's default padding
    lo = pad // 2
    ref = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(x, (lo, pad - lo, lo, pad - lo), value=float("-inf")), size, stride)
    out = DarknetMaxPool(size, stride, pad)(x)
    assert out.shape == ref.shape and torch.equal(out, ref)
    assert out.shape[-1] == (hw + pad - size) // stride + 1
    with torch.no_grad():  # the inference path pools on channels-last memory: same values, a contiguous result
        fast = DarknetMaxPool(size, stride, pad)(x)
    assert torch.equal(fast, ref) and fast.is_contiguous()
