"""Fine-tuning (objectives/finetune.py): the recipe around the cut, AdaBN, learning rates, frozen BatchNorms."""

from __future__ import annotations

import pytest
import torch

from models import TinyYOLOv3, calibrate, prune, split
from objectives.accuracy import predict
from objectives.finetune import finetune, recalibrate_bn
from tests.helpers import adapt, distill, train_cfg
from tests.objectives.conftest import CFG, DATA, EVAL, QUICK  # noqa: F401 - the shared tiny model, data and budget


def _tuned_at_j3(data, edge_lr_scale: float):
    """(baseline, fine-tuned split at j=3, 2 bits) with the node frozen and the conv after the cut at 30 x lr."""
    torch.manual_seed(0)
    base = TinyYOLOv3(CFG).eval()
    sm = split(base, 3, bits=2)
    x = torch.from_numpy(data.images[:16]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
    recipe = adapt(bn_recalib_batches=0, adapt_convs=1, adapt_lr_scale=30.0, node_lr_scale=0.0,
                   edge_lr_scale=edge_lr_scale, freeze_bn=True)
    tuned, _ = finetune(sm, base, data, QUICK, torch.device("cpu"), None, progress=False, adapt=recipe)
    return base, tuned


def test_finetune_split_pruned_quantized(data):
    torch.manual_seed(0)
    base = TinyYOLOv3(CFG).eval()
    sm = split(base, 3, bits=1)
    prune(sm, {4: 1, 0: 0.5})
    x = torch.from_numpy(data.images[:16]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
    w0 = sm.layer(0).conv.weight.detach().clone()
    tuned, stats = finetune(sm, base, data, QUICK, torch.device("cpu"),
                            distill(output_weight=1.0, feature_weight=1.0), progress=False)
    assert stats["steps"] == 6
    assert not torch.equal(tuned.layer(0).conv.weight, w0)  # node layers learn through the STE
    assert tuned.interface.enabled and tuned.cut_shape() == (1, 8, 8)
    dets = predict(tuned, data, CFG.head(), EVAL.conf_threshold, EVAL.nms_iou)
    assert len(dets) == len(data) and all(d.shape[1] == 6 for d in dets)


def test_recalibrate_bn_estimates_the_data_mean(data):
    """AdaBN: after a pass over all images (no augmentation), a BN's running mean is the per-channel mean of
    its input over those images, whatever it was before, and the momentum is restored."""
    torch.manual_seed(0)
    model = TinyYOLOv3(CFG).eval()
    bn = model.layers[0][1]
    with torch.no_grad():
        bn.running_mean.fill_(123.0)
        x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
        inp = model.layers[0].conv(x)  # conv 0's output = its BN's input (deeper BNs see train-mode inputs)
    seen = recalibrate_bn(model, data, batches=100, batch_size=8, device=torch.device("cpu"), amp="none")
    assert seen == len(data) == 32
    assert torch.allclose(bn.running_mean, inp.mean((0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.03 and not model.training
    assert recalibrate_bn(model, data, batches=0, batch_size=8, device=torch.device("cpu")) == 0


@pytest.mark.parametrize("j,n,expected", [(1, 1, [2]), (3, 1, [6]), (4, 2, [8, 10]), (5, 1, [10, 21]), (2, 0, [])])
def test_adapted_convs_are_next_to_the_cut(j, n, expected):
    assert split(TinyYOLOv3(CFG), j, bits=1).adapted_convs(n) == expected


def test_finetune_recipe_learning_rates_and_frozen_bn(data):
    """node_lr_scale=0 freezes the node exactly; frozen edge BNs keep their statistics; the adapted conv, its BN
    and the other edge layers train."""
    base, tuned = _tuned_at_j3(data, edge_lr_scale=1.0)
    for i in (0, 2, 4):
        assert torch.equal(tuned.layer(i).conv.weight, base.layers[i].conv.weight)
    assert torch.allclose(tuned.layer(8)[1].running_mean, base.layers[8][1].running_mean, rtol=0, atol=1e-6)
    assert not torch.allclose(tuned.layer(6)[1].running_mean, base.layers[6][1].running_mean)
    for i in (6, 8):
        assert not torch.equal(tuned.layer(i).conv.weight, base.layers[i].conv.weight)
    assert all(p.requires_grad for p in tuned.parameters())  # the returned model is trainable again


def test_finetune_edge_lr_scale_zero_trains_only_the_convs_next_to_the_cut(data):
    base, tuned = _tuned_at_j3(data, edge_lr_scale=0.0)
    assert not torch.equal(tuned.layer(6).conv.weight, base.layers[6].conv.weight)  # the conv after the cut
    for i in (0, 2, 4, 8, 10, 13):  # node and deeper edge: untouched
        assert torch.equal(tuned.layer(i).conv.weight, base.layers[i].conv.weight), i


def test_finetune_adapt_lr_scale_moves_the_adapted_conv_further(data):
    torch.manual_seed(0)
    base = TinyYOLOv3(CFG).eval()
    x = torch.from_numpy(data.images[:16]).permute(0, 3, 1, 2).float() / 255
    moved = {}
    for scale in (1.0, 30.0):
        sm = split(base, 3, bits=2)
        with torch.no_grad():
            calibrate(sm.interface, [sm.node(x)])
        cfg = train_cfg(steps=6, batch_size=8, lr=1e-4, ema_decay=0.0, amp="none")
        tuned, _ = finetune(sm, base, data, cfg, torch.device("cpu"), None, progress=False,
                            adapt=adapt(bn_recalib_batches=0, adapt_lr_scale=scale))
        moved[scale] = {i: float((tuned.layer(i).conv.weight - base.layers[i].conv.weight).abs().max()) for i in (6, 8)}
    assert moved[30.0][6] > 5 * moved[1.0][6]  # Adam steps scale with the learning rate
    assert moved[30.0][8] < 3 * moved[1.0][8]
