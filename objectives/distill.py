"""Head network distillation (sc2bench's "HND"): a training stage of its own, before the detection fine-tuning, in
which the node side of a split, quantized, pruned model learns to reproduce the baseline's feature after the cut.

Teacher: the baseline, frozen. Student: the split model's node layers, its interface (quantized, straight-through)
and the first ``layers`` layers with weights of its edge - the ones whose input the cut changed (pruned channels,
quantized values) - with every BatchNorm's statistics kept; every later edge layer is the teacher's own and is not
run. Loss: the mean squared error between the student's and the teacher's output of the last of those layers. Both
forward passes stop there, so a step costs a node pass and a few layers, not the detector. The detection
fine-tuning (:func:`objectives.finetune.finetune`) then starts from the distilled weights.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from models import Darknet
from models.split import SplitModel
from objectives.data.batches import Batches
from objectives.data.images import ImageSet
from objectives.device import autocast, to_device
from objectives.fit import TrainingDiverged
from objectives.settings import TrainConfig


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass at the tap, carrying the tap's output."""

    def __init__(self, out: torch.Tensor) -> None:
        self.out = out


def _until(model: nn.Module, tap: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s forward on ``x`` up to ``tap``'s output (the rest of the model is not run)."""
    def hook(m, i, o):
        raise _Stop(o)

    h = tap.register_forward_hook(hook)
    try:
        model(x)
    except _Stop as s:
        return s.out
    finally:
        h.remove()
    raise RuntimeError("the distillation tap was not reached in the forward pass")


def tap_layers(split_model: SplitModel, layers: int) -> list[int]:
    """The darknet indices of the first ``layers`` edge layers that hold weights (the last one is the tap)."""
    edge = sorted(int(k) for k, m in split_model.edge.layers.items() if any(True for _ in m.parameters()))
    if not edge:
        raise ValueError(f"j={split_model.j}: the edge has no layer with weights to distill into")
    return edge[:max(1, layers)]


def head_distill(split_model: SplitModel, baseline: Darknet, data: ImageSet, cfg: TrainConfig, steps: int,
                 layers: int, device: torch.device, lr_scale: float = 1.0) -> dict[str, float]:
    """Train the node and the first ``layers`` edge layers of ``split_model`` for ``steps`` steps to reproduce
    ``baseline``'s output of the last of them (AdamW at ``cfg.lr * lr_scale``, cosine decay, ``cfg``'s batch size,
    augmentation and gradient clipping). Returns steps, seconds, the first and the last loss. A no-op where no
    feature map is cut.
    """
    if steps <= 0 or not split_model.cut_point.is_split:
        return {"head_steps": 0, "head_seconds": 0.0}
    idx = tap_layers(split_model, layers)
    s_tap, t_tap = split_model.edge.layers[str(idx[-1])], baseline.layers[idx[-1]]
    # BatchNorms keep the trained model's statistics (eval mode): the stage fits the weights to the feature the
    # deployed, eval-mode model computes, not to batch statistics
    to_device(split_model, device).eval()
    to_device(baseline, device).eval()
    params = [p for m in split_model.node.layers.values() for p in m.parameters()]
    params += [p for i in idx for p in split_model.edge.layers[str(i)].parameters()]
    for p in split_model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    lr = cfg.lr * lr_scale
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * cfg.min_lr_ratio)
    batches = Batches(data, cfg.batch_size, shuffle=True, augment=cfg.augment, device=device, seed=cfg.seed + 1)
    t0, step, first, last = time.time(), 0, float("nan"), float("nan")
    try:
        while step < steps:
            for imgs, _ in batches:
                with autocast(device, cfg.amp):
                    with torch.no_grad():
                        target = _until(baseline, t_tap, imgs)
                    out = _until(split_model, s_tap, imgs)
                    loss = F.mse_loss(out.float(), target.float())
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"head distillation j={split_model.j}: loss is {float(loss)} at step "
                                           f"{step} of {steps}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                last = float(loss.detach())
                first = last if step == 0 else first
                step += 1
                if step >= steps:
                    break
    finally:
        for p in split_model.parameters():
            p.requires_grad_(True)
        split_model.eval()
    return {"head_steps": step, "head_seconds": time.time() - t0, "head_loss_first": first, "head_loss_last": last}
