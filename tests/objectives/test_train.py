from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config, calibrate, prune, split
from objectives.accuracy import evaluate_map, ground_truth, payload_stats, predict
from objectives.baseline import kmeans_anchors, train_baseline
from objectives.data.synthetic import SyntheticConfig, generate
from objectives.device import DeviceError, resolve_device
from objectives.finetune import finetune, recalibrate_bn
from objectives.fit import ModelEMA, TrainingDiverged, fit
from objectives.metrics import average_precision
from objectives.settings import TrainConfig
from tests.helpers import adapt, augment, distill, train_cfg

CFG = TinyYOLOv3Config(num_classes=1, input_size=64, width=0.125)
DATA = SyntheticConfig(size=64, n_train=32, n_val=8, seed=1, min_foot=12, max_foot=30)
QUICK = train_cfg("baseline", steps=6, batch_size=8, lr=2e-3, amp="bf16", max_minutes=0.0)


@pytest.fixture(scope="module")
def data():
    return generate(DATA, "train", workers=1)


def test_kmeans_anchors_recovers_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 12], [20, 40], [40, 25], [60, 60], [90, 120], [150, 100]], float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    got = kmeans_anchors(wh, 6)
    assert np.allclose(got, centres[np.argsort(centres.prod(1))], rtol=0.05)
    with pytest.raises(ValueError, match="at least 6 boxes"):
        kmeans_anchors(wh[:3], 6)


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 1)
    ema = ModelEMA(m, decay=0.5, tau=1e-9)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    before = ema.ema.weight.clone()
    assert not torch.equal(before, m.weight)
    for _ in range(30):
        ema.update(m)
    assert torch.allclose(ema.ema.weight, m.weight, atol=1e-6)


def test_ema_update_is_the_decayed_average_of_every_float_tensor_and_copies_the_rest():
    """The fused update equals d * ema + (1 - d) * model for parameters and float buffers (BatchNorm statistics),
    with the warm-up decay d = decay * (1 - exp(-updates / tau)); integer buffers are copied."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = ModelEMA(m, decay=0.9, tau=2.0)
    ref = {k: v.clone() for k, v in ema.ema.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        m.train()(torch.randn(2, 3, 8, 8))  # moves the running statistics and num_batches_tracked
        ema.update(m)
        d = 0.9 * (1 - np.exp(-step / 2.0))
        for k, v in m.state_dict().items():
            ref[k] = ref[k] * d + v * (1 - d) if v.dtype.is_floating_point else v.clone()
        for k, v in ema.ema.state_dict().items():
            assert torch.allclose(v.double(), ref[k].double(), atol=1e-6), (step, k)
    assert int(ema.ema[1].num_batches_tracked) == 3


def test_training_and_evaluation_run_channels_last_with_the_same_values(data):
    """fit(), predict() and the split's calibration put the convolutions channels-last (faster on the CPU, README
    "Speed"); the outputs equal the NCHW model's, and every max-pool keeps the layout."""
    torch.manual_seed(0)
    model = TinyYOLOv3(CFG).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        ref = [o.clone() for o in model(x)]
    predict(model, data, CFG.head())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last)))
             for m in model.modules() if type(m).__name__ == "DarknetMaxPool"]
    with torch.no_grad():
        got = model(x)
    for h in hooks:
        h.remove()
    assert seen and all(seen)
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    ema, _ = fit(TinyYOLOv3(CFG), CFG.head(), 64, data, QUICK, torch.device("cpu"), progress=False)
    assert ema.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    sm = split(TinyYOLOv3(CFG).eval(), 3, bits=4)
    sm.calibrate(x, "cpu", 100.0)
    assert sm.node.layers["0"].conv.weight.is_contiguous(memory_format=torch.channels_last)


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


def test_fit_learns_on_a_few_images(data):
    """Over-fitting 4 images: mAP on those images rises well above an untrained model's."""
    torch.manual_seed(0)
    few = data.subset(0, 4)
    model = TinyYOLOv3(CFG)
    head = CFG.head()
    before = evaluate_map(model, few, head, 64).map50
    cfg = train_cfg("baseline", steps=250, batch_size=4, lr=5e-3, warmup_epochs=0.0, ema_decay=0.9, amp="bf16",
                    max_minutes=0.0, augment=augment(flip_lr=0, brightness=0, saturation=0, contrast=0, scale=(1, 1),
                                                     translate=0))
    ema, stats = fit(model, head, 64, few, cfg, torch.device("cpu"), progress=False)
    after = evaluate_map(ema, few, head, 64).map50
    assert stats["steps"] == 250
    assert after > max(0.5, before + 0.3), (before, after)


def test_divergence_is_reported(data):
    model = TinyYOLOv3(CFG)
    with torch.no_grad():
        model.layers[15].conv.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan at step 0"):
        fit(model, CFG.head(), 64, data, QUICK, torch.device("cpu"), progress=False)


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
    dets = predict(tuned, data, CFG.head())
    assert len(dets) == len(data) and all(d.shape[1] == 6 for d in dets)


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


def test_evaluate_map_perfect_predictions_score_one(data):
    gts = ground_truth(data, 64)
    dets = [np.c_[g[:, :4], np.full(len(g), 0.9), g[:, 4]] for g in gts]
    assert average_precision(dets, gts, 1).map50 == pytest.approx(1.0)


def test_resolve_device():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("bad,match", [(dict(amp="fp8"), "amp"), (dict(epochs=0, steps=0), "epochs"),
                                       (dict(batch_size=0), "batch_size")])
def test_train_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**train_cfg().__dict__, **bad})


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
