"""The generic training loop: AdamW, linear warm-up then cosine decay, bf16 autocast where supported, gradient
clipping and an exponential moving average (EMA) of the weights, over any module that returns raw YOLO head
outputs. Baseline training (:mod:`objectives.baseline`) and fine-tuning (:mod:`objectives.finetune`) call it."""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models import YOLOHeadConfig, YOLOLoss
from objectives.data.batches import Batches
from objectives.data.images import ImageSet
from objectives.design import PointFailed
from objectives.device import autocast, to_device
from objectives.settings import DistillConfig, TrainConfig


class ModelEMA:
    """Exponential moving average of a model's weights (YOLOv5-style warm-up of the decay)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 2000.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        if self._pairs is None:  # the same tensors every step (parameters and buffers are updated in place)
            msd = model.state_dict()
            pairs: tuple[list[torch.Tensor], ...] = ([], [], [], [])
            for k, v in self.ema.state_dict().items():
                pairs[0 if v.dtype.is_floating_point else 2].append(v)
                pairs[1 if v.dtype.is_floating_point else 3].append(msd[k].detach())
            self._pairs = pairs
        ema_f, model_f, ema_i, model_i = self._pairs
        torch._foreach_lerp_(ema_f, model_f, 1 - d)  # ema = d * ema + (1 - d) * model, in one fused call
        for v, m in zip(ema_i, model_i, strict=True):
            v.copy_(m)


def _lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (0.1 + 0.9 * step / max(warmup, 1))
    p = (step - warmup) / max(total - warmup, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


class TrainingDiverged(PointFailed):
    """The loss became NaN or infinite; the message says when."""


def fit(
    model: nn.Module,
    head: YOLOHeadConfig,
    input_size: int,
    data: ImageSet,
    cfg: TrainConfig,
    device: torch.device,
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
    feature_taps: tuple[nn.Module, nn.Module] | None = None,
    desc: str = "train",
    progress: bool = True,
    param_groups: list[tuple[list[nn.Parameter], float]] | None = None,
    frozen_bn: tuple[nn.Module, ...] = (),
) -> tuple[nn.Module, dict[str, float]]:
    """Train ``model`` (any module returning the two raw head outputs) and return its EMA copy.

    Args:
        param_groups: (parameters, learning-rate multiplier) pairs; parameters in none of them, or with a
            multiplier of 0, are frozen. Default: every parameter at ``cfg.lr``.
        frozen_bn: BatchNorm layers kept in eval mode (their running statistics do not change).

    Returns:
        (EMA model in eval mode, stats: steps, seconds, last loss).
    """
    torch.manual_seed(cfg.seed)
    to_device(model, device).train()
    for m in frozen_bn:
        m.eval()
    loss_fn = YOLOLoss(head, input_size)
    batches = Batches(data, cfg.batch_size, shuffle=True, augment=cfg.augment, device=device, seed=cfg.seed)
    per_epoch = len(batches)
    total = cfg.steps if cfg.steps > 0 else max(1, int(round(cfg.epochs * per_epoch)))
    warmup = min(int(cfg.warmup_epochs * per_epoch), total // 3)
    groups = param_groups if param_groups is not None else [(list(model.parameters()), 1.0)]
    trained = {id(p) for params, scale in groups if scale > 0 for p in params}
    for p in model.parameters():
        if id(p) not in trained:
            p.requires_grad_(False)
    opt_groups = []
    for params, scale in groups:
        if scale > 0:
            ps = [p for p in params if p.requires_grad]
            decay, no_decay = [p for p in ps if p.ndim > 1], [p for p in ps if p.ndim <= 1]
            for part, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
                if part:
                    opt_groups.append({"params": part, "weight_decay": wd, "lr_scale": scale})
    if not opt_groups:
        raise ValueError(f"{desc}: no parameter to train (every learning-rate multiplier is 0)")
    opt = torch.optim.AdamW(opt_groups, lr=cfg.lr, fused=True)  # one fused kernel for every parameter (CPU and CUDA)
    ema = ModelEMA(model, cfg.ema_decay, tau=max(50.0, min(2000.0, total / 5)))
    if teacher is not None:
        to_device(teacher, device).eval()
    feats: dict[str, torch.Tensor] = {}
    hooks = []
    if distill is not None and distill.feature_weight > 0 and feature_taps is not None:
        hooks = [feature_taps[0].register_forward_hook(lambda m, i, o: feats.__setitem__("s", o)),
                 feature_taps[1].register_forward_hook(lambda m, i, o: feats.__setitem__("t", o))]
    t0, step, last = time.time(), 0, float("nan")
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    try:
        while step < total:
            for imgs, targets in batches:
                lr = _lr_at(step, total, warmup, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                with autocast(device, cfg.amp):
                    out = model(imgs)
                    loss, parts = loss_fn(out, targets)
                    if teacher is not None and distill is not None:
                        with torch.no_grad():
                            t_out = teacher(imgs)
                        if distill.output_weight > 0:
                            kd = sum(F.mse_loss(s.float(), t.float()) for s, t in zip(out, t_out, strict=True))
                            loss = loss + distill.output_weight * kd
                        if distill.feature_weight > 0 and "s" in feats and "t" in feats:
                            loss = loss + distill.feature_weight * F.mse_loss(feats["s"].float(), feats["t"].float())
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"{desc}: loss is {float(loss.detach())} at step {step} of {total}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                ema.update(model)
                step += 1
                last = float(loss.detach())
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{last:.3f}")
                if step >= total or (cfg.max_minutes and time.time() - t0 > cfg.max_minutes * 60):
                    break
            if cfg.max_minutes and time.time() - t0 > cfg.max_minutes * 60:
                break
    finally:
        bar.close()
        for h in hooks:
            h.remove()
    ema.ema.requires_grad_(True)  # a trainable module again (pruning traces gradients)
    return ema.ema, {"steps": step, "seconds": time.time() - t0, "loss": last, "epochs": step / per_epoch}
