"""The training loop (objectives/fit.py): EMA, learning, divergence, channels-last; the device and train-config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import TinyYOLOv3, split
from objectives.accuracy import evaluate_map, predict
from objectives.device import DeviceError, resolve_device
from objectives.fit import ModelEMA, TrainingDiverged, fit
from objectives.settings import TrainConfig
from tests.helpers import augment, train_cfg
from tests.objectives.conftest import CFG, DATA, EVAL, QUICK  # noqa: F401 - the shared tiny model, data and budget


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
    predict(model, data, CFG.head(), EVAL.conf_threshold, EVAL.nms_iou)
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


def test_fit_learns_on_a_few_images(data):
    """Over-fitting 4 images: mAP on those images rises well above an untrained model's."""
    torch.manual_seed(0)
    few = data.subset(0, 4)
    model = TinyYOLOv3(CFG)
    head = CFG.head()
    before = evaluate_map(model, few, head, 64, EVAL.conf_threshold, EVAL.nms_iou).map50
    cfg = train_cfg("baseline", steps=250, batch_size=4, lr=5e-3, warmup_epochs=0.0, ema_decay=0.9, amp="bf16",
                    max_minutes=0.0, augment=augment(flip_lr=0, brightness=0, saturation=0, contrast=0, scale=(1, 1),
                                                     translate=0))
    ema, stats = fit(model, head, 64, few, cfg, torch.device("cpu"), progress=False)
    after = evaluate_map(ema, few, head, 64, EVAL.conf_threshold, EVAL.nms_iou).map50
    assert stats["steps"] == 250
    assert after > max(0.5, before + 0.3), (before, after)


def test_divergence_is_reported(data):
    model = TinyYOLOv3(CFG)
    with torch.no_grad():
        model.layers[15].conv.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan at step 0"):
        fit(model, CFG.head(), 64, data, QUICK, torch.device("cpu"), progress=False)


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
