"""A learned bottleneck in the split (objectives/bottleneck.py, models/split.py): the identity bottleneck reproduces
the unsplit model, its training lowers the distillation loss and trains nothing else, the split model counts its
MACs, shape and tables, a design point measures it, and the settings hold its training only where it is searched."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from models import TinyYOLOv3, split
from models.bottleneck import BottleneckInterface
from models.codec import decode, encode_features
from objectives.bottleneck import attach, train_bottleneck
from objectives.design import DesignPoint, bottleneck_key, bottleneck_of, is_anchor
from objectives.objective import EvalSettings, measure
from search.settings import difference, search_settings, settings_record
from search.workbench import final_training
from tests.helpers import conf
from tests.objectives.conftest import CFG, QUICK  # noqa: F401 - the shared tiny model and budget


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    from objectives.fit import fit

    model, _ = fit(TinyYOLOv3(CFG), CFG.head(), 64, data, QUICK, torch.device("cpu"), progress=False)
    return model.eval()


def images(data, n=8):
    return torch.from_numpy(data.images[:n]).permute(0, 3, 1, 2).float() / 255


def test_an_identity_bottleneck_reproduces_the_unsplit_model(data, teacher):
    """With as many latent channels as the cut and a fine enough scale, node -> encoder -> integers -> decoder ->
    edge equals the unsplit detector up to the rounding of the cut (half a level of 1/scale)."""
    x = images(data)
    sm = split(teacher, 3).eval()
    c, h, w = sm.cut_shape()
    with torch.no_grad():
        f = sm.node(x)
        scale = 127 / float(f.abs().max()) * 0.99  # the cut's range fits the 8-bit latent
        sm.interface = BottleneckInterface.identity(c, 8, scale).eval()
        got, ref = sm(x), teacher(x)
        assert float((sm.interface(f) - f).abs().max()) <= 0.5 / scale + 1e-6
    for g, r in zip(got, ref, strict=True):
        assert torch.allclose(g, r, atol=0.05 * float(r.abs().max())), float((g - r).abs().max())
    coarse = split(teacher, 3).eval()
    coarse.interface = BottleneckInterface.identity(c, 8, scale / 64).eval()  # 64 x coarser: visibly different
    with torch.no_grad():
        far = max(float((g - r).abs().max()) for g, r in zip(coarse(x), ref, strict=True))
        near = max(float((g - r).abs().max()) for g, r in zip(got, ref, strict=True))
    assert far > 4 * near


def distortion(sm, x, tap=None):
    """Relative squared error of the split model's cut (or of the edge's output at ``tap``) against the teacher's
    (its own frozen node and edge), as deployed: eval mode, rounded latent."""
    from objectives.distill import _until

    with torch.no_grad():
        f = sm.node(x)
        g = sm.interface(f)
        if tap is not None:
            f, g = _until(sm.edge, tap, f), _until(sm.edge, tap, g)
        return float(((g - f) ** 2).mean() / f.var())


@pytest.mark.parametrize("layers", [0, 1])
def test_training_lowers_the_distillation_loss_and_trains_only_the_bottleneck(data, teacher, layers):
    """The decoder starts at the cut's channel means; 100 steps of distillation (at the cut, or through the first
    edge layer) + rate bring the deployed model's distortion well below that (measured at the cut: 0.093 -> 0.04)."""
    from objectives.distill import tap_layers

    x = images(data, 32)
    sm = split(teacher, 3)
    cfg = dataclasses.replace(conf().train.bottleneck, batch_size=8, lr=1e-3, distill_layers=layers)
    b = attach(sm, 4, cfg)
    tap = sm.edge.layers[str(tap_layers(sm, 1)[-1])] if layers else None
    with torch.no_grad():  # the starting point: every channel at its mean
        f = sm.node(x)
        mean = f.mean((0, 2, 3), keepdim=True).expand_as(f)
        from objectives.distill import _until
        d0 = float(((mean - f) ** 2).mean() / f.var()) if tap is None else float(
            ((_until(sm.edge, tap, mean) - _until(sm.edge, tap, f)) ** 2).mean() / _until(sm.edge, tap, f).var())
    rest = {k: v.clone() for k, v in sm.state_dict().items() if not k.startswith("interface.")}
    stats = train_bottleneck(sm, data, cfg, 0.01, 100, torch.device("cpu"))
    assert stats["bottleneck_steps"] == 100 and stats["bottleneck_bits_per_position"] > 0
    d1 = distortion(sm.eval(), x, tap)
    assert d1 < (0.6 if tap is None else 0.8) * d0, (d0, d1)
    assert all(torch.equal(v, rest[k]) for k, v in sm.state_dict().items() if k in rest)  # node, edge frozen
    assert not b.training and not b.noise and all(p.requires_grad for p in sm.parameters())
    # what the split model reports: the latent's shape, the encoder on the node and the decoder on the edge
    c, h, w = sm.cut_point.channels, sm.cut_point.height, sm.cut_point.width
    assert sm.cut_shape() == (4, h, w)
    plain = split(teacher, 3).macs()
    enc = c * 4 * 9 * h * w
    assert sm.macs().node == plain.node + enc and sm.macs().edge == plain.edge + enc
    # the entropy model of `ans` is the learned prior; its codes frame and unframe like any cut
    sm.fit_entropy(images(data), "cpu", ("ans", "ans_ctx"))
    assert sm.interface.entropy["ans"].crc32 == b.prior.entropy_model().crc32
    with torch.no_grad():
        q = b.quantize(sm.node(images(data, 1)))[0]
    for codec in ("ans", "ans_ctx", "zlib"):
        blob = encode_features(q, b.bits, float(b.mu), float(b.max), codec, model=sm.interface.entropy.get(codec))
        assert torch.equal(decode(blob, models=sm.interface.entropy).codes, q)
    with pytest.raises(ValueError, match="cut feature map"):
        attach(split(teacher, 0), 4, cfg)


def test_a_bottleneck_design_point_is_measured_end_to_end(data, teacher):
    rc = conf("train.bottleneck.steps=10", "train.bottleneck.batch_size=8", "train.finetune.steps=2",
              "train.finetune.batch_size=8", "train.finetune_when=always", "eval.calib_images=8",
              "eval.payload_images=4")
    s = EvalSettings(rc.eval, rc.model, rc.train, ("none", "zlib", "ans"), False, False, None)
    point = DesignPoint(2, bottleneck=3, rate_lambda=0.01)
    m = measure(point, teacher, data, data, s, torch.device("cpu"))
    r = m.result
    c, h, w = r.cut_shape
    assert r.key == "j=2;bn=3;lam=0.01" == bottleneck_key(2, 3, 0.01) and bottleneck_of(r.key) == (3, 0.01)
    assert not is_anchor(r.key) and bottleneck_of("j=2;b=1;cut=4/4;L=[];crit=-") is None
    assert c == 3 and r.feature_values == 3 * h * w and r.bottleneck_steps == 10 and r.finetune_steps == 2
    assert r.raw_bytes == -(-3 * h * w * 5 // 8)  # 5-bit codes
    assert r.payload_mean_bytes["none"] == 24 + r.raw_bytes and r.entropy_table_bytes["ans"] > 0
    plain = split(teacher, 2)
    assert r.node_macs == plain.macs().node + plain.cut_shape()[0] * 3 * 9 * h * w
    assert r.weight_count == sum(p.numel() for p in plain.node.parameters()) + plain.cut_shape()[0] * 3 * 9 + 3
    assert point.accuracy_key(m.model.table) == r.key


def test_the_fine_tuning_keeps_the_node_and_the_encoder(data, teacher):
    from objectives.finetune import finetune

    rc = conf()
    sm = split(teacher, 3)
    attach(sm, 4, rc.train.bottleneck)
    node0 = copy.deepcopy(sm.node.state_dict())
    enc0, dec0 = (copy.deepcopy(m.state_dict()) for m in (sm.interface.encoder, sm.interface.decoder))
    cfg = dataclasses.replace(rc.train.finetune, steps=3, batch_size=8, lr=1e-2, ema_decay=0.0)
    tuned, _ = finetune(sm, teacher, data, cfg, torch.device("cpu"), rc.train.distill, progress=False,
                        adapt=rc.train.adapt)
    assert all(torch.equal(v, enc0[k]) for k, v in tuned.interface.encoder.state_dict().items())
    assert all(torch.equal(v, node0[k]) for k, v in tuned.node.state_dict().items() if "running" not in k
               and "num_batches" not in k)
    assert any(not torch.equal(v, dec0[k]) for k, v in tuned.interface.decoder.state_dict().items())


def test_its_training_is_in_the_settings_only_where_the_space_searches_it():
    off, on = conf(), conf("space.bottleneck.latent=[8,16]")
    assert "bottleneck" not in settings_record(off, "m")["train"]  # studies from before it match
    assert settings_record(on, "m")["train"]["bottleneck"]["steps"] == 1500
    assert "final_steps" not in settings_record(on, "m")["train"]["bottleneck"]  # the final budget never counts
    assert difference(search_settings(on, "m"), conf("space.bottleneck.latent=[8,16]", "train.bottleneck.steps=10"),
                      "m") == "train.bottleneck.steps: 1500 vs 10"
    assert search_settings(off, "m") == search_settings(conf("train.bottleneck.steps=10"), "m")
    assert final_training(on.train).bottleneck.steps == on.train.bottleneck.final_steps


def test_a_strided_bottleneck_is_measured_at_its_latent_size(data, teacher):
    rc = conf("train.bottleneck.stride=2", "train.bottleneck.steps=5", "train.bottleneck.batch_size=8",
              "train.finetune.steps=1", "train.finetune.batch_size=8", "train.finetune_when=always",
              "eval.calib_images=8", "eval.payload_images=4")
    s = EvalSettings(rc.eval, rc.model, rc.train, ("none", "ans"), False, False, None)
    r = measure(DesignPoint(2, bottleneck=3, rate_lambda=0.01), teacher, data, data, s, torch.device("cpu")).result
    plain = split(teacher, 2)
    c, h, w = plain.cut_shape()
    assert tuple(r.cut_shape) == (3, h // 2, w // 2) and r.feature_values == 3 * (h // 2) * (w // 2)
    assert r.raw_bytes == -(-3 * (h // 2) * (w // 2) * 5 // 8)
    assert r.node_macs == plain.macs().node + c * 3 * 9 * (h // 2) * (w // 2)  # the encoder at the latent's positions
    assert r.edge_macs == plain.macs().edge + 3 * c * 4 * 9 * (h // 2) * (w // 2)  # the decoder's 4 x C outputs
    sm = split(teacher, 2)
    attach(sm, 3, rc.train.bottleneck)
    x = images(data, 2)
    assert sm.node_peak_activation(x) >= c * h * w + 3 * (h // 2) * (w // 2)
    with torch.no_grad():
        assert [t.shape for t in sm.eval()(x)] == [t.shape for t in teacher(x)]


def test_the_stride_counts_in_the_settings_only_where_it_is_not_1_and_bad_strides_are_one_line():
    from search.profiles import ConfigError

    on = ("space.bottleneck.latent=[8]",)
    assert "stride" not in settings_record(conf(*on), "m")["train"]["bottleneck"]  # studies from before it match
    assert settings_record(conf(*on, "train.bottleneck.stride=2"), "m")["train"]["bottleneck"]["stride"] == 2
    with pytest.raises(ValueError, match="train.bottleneck.stride=5 must be in 1..train.bottleneck.kernel"):
        conf("train.bottleneck.stride=5")
    # the default model's j = 4 cut is 10 x 10: a stride of 4 cannot code it, said before anything runs
    wide = ("train.bottleneck.stride=4", "train.bottleneck.kernel=5")
    with pytest.raises(ConfigError, match=r"train.bottleneck.stride=4 does not divide the 10x10 cut at j=4"):
        conf(*on, *wide)
    assert conf(*on, *wide, "space.partitions=[0,1,2,3]").train.bottleneck.stride == 4
    assert conf(*wide).train.bottleneck.stride == 4  # no bottleneck searched: nothing to divide
