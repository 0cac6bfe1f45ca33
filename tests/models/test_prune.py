from __future__ import annotations

import pytest
import torch

from models import CRITERIA, TinyYOLOv3, TinyYOLOv3Config, calibrate, decode, encode_features, prune, split


@pytest.fixture(scope="module")
def full160():
    torch.manual_seed(0)
    return TinyYOLOv3(TinyYOLOv3Config(num_classes=1, input_size=160)).eval()


def test_j3_one_channel_payload_runs_and_hand_counted_macs(full160):
    sm = split(full160, 3, bits=1)
    x = torch.rand(2, 3, 160, 160)
    assert prune(sm, {4: 1}) == {4: (64, 1)}
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
        f = sm.node(x)
        assert tuple(f.shape) == (2, 1, 20, 20) and sm.cut_shape() == (1, 20, 20)
        heads = sm(x)
    assert [tuple(h.shape) for h in heads] == [(2, 18, 5, 5), (2, 18, 10, 10)]
    payload = encode_features(sm.interface.quantize(f[0]), 1, float(sm.interface.mu),
                              float(sm.interface.max), "none")
    assert decode(payload).codes.shape == (1, 20, 20)
    # hand count: conv0 160²·16·3·9 + conv2 80²·32·16·9 + conv4 40²·1·32·9
    assert sm.macs().node == 160 * 160 * 16 * 27 + 80 * 80 * 32 * 16 * 9 + 40 * 40 * 1 * 32 * 9 == 41_011_200
    assert sm.macs().node_per_layer == {0: 11_059_200, 2: 29_491_200, 4: 460_800}
    # the edge's first conv lost the matching input channels (layer 6: 128 out, 1 in, 20x20 out)
    assert sm.layer(6).conv.in_channels == 1
    assert sm.macs().edge_per_layer[6] == 20 * 20 * 128 * 1 * 9


def test_step1_pruning_equals_zeroing_dropped_inputs(small_model):
    """Removing channels of the cut conv is the same network as zeroing their weights in the edge conv."""
    sm = split(small_model, 3, interface=False)
    w_before = sm.layer(4).conv.weight.detach().clone()
    prune(sm, {4: 5})
    kept = [int(((w_before - w).flatten(1).abs().sum(1) == 0).nonzero()[0]) for w in sm.layer(4).conv.weight]
    ref = split(small_model, 3, interface=False)
    drop = [c for c in range(16) if c not in kept]
    with torch.no_grad():
        ref.layer(6).conv.weight[:, drop] = 0
        x = torch.rand(2, 3, 160, 160)
        for a, b in zip(sm(x), ref(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_step2_ratios_heads_and_later_edge_layers_untouched(small_model):
    sm = split(small_model, 4, bits=2)
    base = {k: v.clone() for k, v in sm.edge.state_dict().items()}
    done = prune(sm, {6: 0.25, 0: 0.5, 2: 0.01, 4: 1.0})
    assert done == {6: (32, 8), 0: (4, 2), 2: (8, 1)}  # 0.01 of 8 rounds to 0: one channel survives
    after = sm.edge.state_dict()
    for k, v in base.items():
        if k.startswith("layers.8.0.weight"):
            assert after[k].shape[1] == 8  # the edge's first conv lost inputs
        else:
            assert torch.equal(after[k], v), k  # everything else on the edge, heads included, is untouched
    sm(torch.rand(1, 3, 160, 160))


def test_j5_prunes_both_consumers_of_conv8(small_model):
    sm = split(small_model, 5, interface=False)
    prune(sm, {8: 3})
    assert sm.layer(10).conv.in_channels == 3
    assert sm.layer(21).conv.in_channels == sm.layer(18).conv.out_channels + 3
    assert [tuple(h.shape) for h in sm(torch.rand(1, 3, 160, 160))] == [(1, 18, 5, 5), (1, 18, 10, 10)]


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale"])
def test_criterion_keeps_the_strongest_channel(small_model, criterion):
    sm = split(small_model, 2, interface=False)
    conv, bn = sm.layer(2)[0], sm.layer(2)[1]
    with torch.no_grad():
        conv.weight.mul_(0.01)
        bn.weight.fill_(0.1)
        conv.weight[5] = 1.0
        bn.weight[5] = 5.0
        marker = conv.weight[5].clone()
    prune(sm, {2: 1}, criterion)
    assert torch.equal(sm.layer(2)[0].weight[0], marker)


def test_taylor_uses_gradients(small_model):
    sm = split(small_model, 2, bits=1)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
    done = prune(sm, {2: 0.5, 0: 0.5}, "taylor", loss_fn=lambda m: sum(h.square().mean() for h in m(x)))
    assert done == {2: (8, 4), 0: (4, 2)}
    assert all(p.grad is None for p in sm.parameters())
    assert sm.interface.enabled


def test_bad_prune_requests(small_model):
    sm = split(small_model, 3)
    with pytest.raises(ValueError, match="not a prunable node conv"):
        prune(sm, {6: 0.5})
    with pytest.raises(ValueError, match="criterion"):
        prune(sm, {4: 0.5}, "magic")
    with pytest.raises(ValueError, match="loss_fn"):
        prune(sm, {4: 0.5}, "taylor")
    with pytest.raises(ValueError, match="ratio"):
        prune(sm, {4: 0.0})
    with pytest.raises(ValueError, match="channels"):
        prune(sm, {4: 0})
    assert set(CRITERIA) == {"l1", "l2", "bn_scale", "taylor"}


def test_prune_works_on_a_frozen_copy(small_model):
    """A baseline whose parameters do not require grad (an EMA copy) still splits and prunes."""
    small_model.requires_grad_(False)
    sm = split(small_model, 2, interface=False)
    assert prune(sm, {2: 1}) == {2: (8, 1)}
