"""Baseline training from scratch and fine-tuning of split, quantized, pruned models.

Baseline recipe (measured to reach the mAP target on the embedded data on 2 cores; see README): AdamW,
linear warm-up then cosine decay, bf16 autocast on CPU where supported, an exponential moving average (EMA)
of the weights for evaluation, k-means anchors from the training boxes, grid-sensitive centres and
multi-cell positives in the loss (:class:`models.yolo.YOLOLoss`), scale/flip/colour augmentation.

Fine-tuning is quantization-aware through the straight-through interface. Its recipe (:class:`AdaptConfig`,
measured on the embedded data, figures in the README): first re-estimate every BatchNorm's running statistics
on a few training batches (AdaBN: the layers after the cut now see a quantized, maybe pruned input); then train
with the first conv layer(s) after the cut at a much higher learning rate than the rest, and the BatchNorm
layers deeper in the edge frozen. Knowledge distillation from the baseline, on the detection outputs and on
the feature after the edge's first layer, is optional (off by default: raw-output MSE was measured to hurt).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from models import TinyYOLOv3, TinyYOLOv3Config, YOLOHeadConfig, YOLOLoss
from models.split import SplitModel
from models.tiny_yolov3 import ConvBlock, Route
from objectives.data.batches import AugmentConfig, Batches
from objectives.data.synthetic import ImageSet

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is available; use device=auto or cpu")
    return dev


def autocast(device: torch.device, amp: str):
    """bf16 autocast for ``amp='bf16'`` (CPU and CUDA), fp16 for ``'fp16'`` on CUDA; a no-op for ``'none'``."""
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype)


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings for baseline training or fine-tuning.

    ``epochs`` (float: a fraction of an epoch is allowed) or ``steps`` (if > 0, wins) sets the budget;
    ``max_minutes`` stops earlier on wall time.
    """

    epochs: float = 30.0
    steps: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.999
    amp: str = "bf16"
    seed: int = 0
    max_minutes: float = 0.0
    grad_clip: float = 10.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "weight_decay", "warmup_epochs", "min_lr_ratio", "ema_decay", "max_minutes",
                     "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, name, float(v))  # 26 and 26.0 are one config (and one cache key)
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"train.amp={self.amp!r} not in ['bf16', 'fp16', 'none']")
        if self.epochs <= 0 and self.steps <= 0:
            raise ValueError(f"train.epochs={self.epochs} and train.steps={self.steps}: one must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from the baseline during fine-tuning (0 disables a term)."""

    output_weight: float = 0.0  # MSE between student and teacher raw head outputs (objectness + boxes)
    feature_weight: float = 0.0  # MSE on the output of the edge's first conv layer
    temperature: float = 1.0


@dataclass(frozen=True)
class AdaptConfig:
    """How fine-tuning treats the layers around the cut (defaults measured; see the README).

    Attributes:
        bn_recalib_batches: before fine-tuning, re-estimate every BatchNorm's running mean and variance over
            this many training batches without augmentation and without gradients (AdaBN); 0 skips it.
        adapt_convs: the first this-many conv layers after the cut learn at ``lr * adapt_lr_scale``.
        adapt_lr_scale: learning-rate multiplier of those layers.
        node_lr_scale: learning-rate multiplier of the node's layers.
        freeze_bn: BatchNorm layers of the edge past the adapted ones keep their running statistics (eval
            mode) while fine-tuning; the node's and the adapted layers' BatchNorms train.
    """

    bn_recalib_batches: int = 5
    adapt_convs: int = 1
    adapt_lr_scale: float = 30.0
    node_lr_scale: float = 1.0
    freeze_bn: bool = True

    def __post_init__(self) -> None:
        for name in ("bn_recalib_batches", "adapt_convs", "adapt_lr_scale", "node_lr_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (a scale of 0 freezes those layers)")


class ModelEMA:
    """Exponential moving average of a model's weights (YOLOv5-style warm-up of the decay)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, tau: float = 2000.0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def head_config(cfg: TinyYOLOv3Config) -> YOLOHeadConfig:
    return YOLOHeadConfig(num_classes=cfg.num_classes, anchors=tuple(map(tuple, cfg.scaled_anchors.tolist())))


def kmeans_anchors(wh: np.ndarray, k: int = 6, iters: int = 100, seed: int = 0, restarts: int = 5) -> np.ndarray:
    """k-means on box sizes with 1 - IoU distance (YOLOv2), k-means++ seeding, best of ``restarts`` by mean
    IoU of each box with its closest anchor. ``wh`` (N, 2) pixels -> (k, 2) sorted by area."""
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh > 1).all(1)]
    if len(wh) < k:
        raise ValueError(f"k-means anchors need at least {k} boxes, got {len(wh)}")

    def iou(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        inter = np.minimum(a[:, None], c[None]).prod(2)
        return inter / (a.prod(1)[:, None] + c.prod(1)[None] - inter)

    rng = np.random.default_rng(seed)
    best, best_fit = None, -1.0
    for _ in range(restarts):
        centres = wh[rng.integers(len(wh))][None]
        while len(centres) < k:  # k-means++: next centre far (in 1 - IoU) from the chosen ones
            d = (1 - iou(wh, centres).max(1)) ** 2
            pick = rng.choice(len(wh), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(wh))
            centres = np.vstack([centres, wh[pick]])
        for _ in range(iters):
            assign = iou(wh, centres).argmax(1)
            new = np.array([np.median(wh[assign == j], 0) if (assign == j).any() else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        fit = iou(wh, centres).max(1).mean()
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[np.argsort(best.prod(1))]


def _lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    if step < warmup:
        return cfg.lr * (0.1 + 0.9 * step / max(warmup, 1))
    p = (step - warmup) / max(total - warmup, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


class TrainingDiverged(RuntimeError):
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
    model.to(device).train()
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
    opt = torch.optim.AdamW(opt_groups, lr=cfg.lr)
    ema = ModelEMA(model, cfg.ema_decay, tau=max(50.0, min(2000.0, total / 5)))
    if teacher is not None:
        teacher.to(device).eval()
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


# ------------------------------------------------------------------------------------------ baseline


@dataclass(frozen=True)
class BaselineResult:
    model: TinyYOLOv3
    seconds: float
    cached: bool
    path: Path


def _cache_key(model_cfg: TinyYOLOv3Config, data_key: str, train: TrainConfig, kmeans: bool) -> str:
    blob = json.dumps({"v": 1, "model": asdict(model_cfg), "data": data_key, "train": asdict(train),
                       "kmeans": kmeans}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_baseline(
    model_cfg: TinyYOLOv3Config,
    train_data: ImageSet,
    data_key: str,
    cfg: TrainConfig,
    cache_dir: Path,
    device: torch.device,
    kmeans: bool = True,
    progress: bool = True,
) -> BaselineResult:
    """Train the unsplit detector from scratch, or load it from ``cache_dir``.

    The checkpoint is keyed by a hash of the model, data and training config and loaded with
    ``weights_only=True``; a corrupt or mismatched file is rebuilt with a warning.
    """
    key = _cache_key(model_cfg, data_key, cfg, kmeans)
    path = Path(cache_dir) / f"baseline-{key}.pt"
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            anchors = tuple(tuple(float(v) for v in a) for a in ckpt["anchors"])
            mcfg = replace(model_cfg, anchors=anchors)
            model = TinyYOLOv3(mcfg)
            model.load_state_dict(ckpt["state_dict"])
            if ckpt.get("key") != key:
                raise ValueError("checkpoint key mismatch")
            return BaselineResult(model.eval(), float(ckpt.get("seconds", 0.0)), True, path)
        except Exception as e:  # noqa: BLE001 - any bad cache is rebuilt, never a crash
            warnings.warn(f"baseline cache {path} is unusable ({type(e).__name__}: {e}); retraining", stacklevel=2)
    mcfg = model_cfg
    if kmeans:
        wh = np.concatenate([lab[:, 3:5] for lab in train_data.labels if len(lab)]) * model_cfg.input_size
        scaled = kmeans_anchors(wh, 6, seed=cfg.seed) * (416 / model_cfg.input_size)  # anchors are stored at 416 px
        mcfg = replace(model_cfg, anchors=tuple(map(tuple, scaled.round(2).tolist())))
    torch.manual_seed(cfg.seed)
    model = TinyYOLOv3(mcfg)
    ema, stats = fit(model, head_config(mcfg), mcfg.input_size, train_data, cfg, device, desc="baseline",
                     progress=progress)
    ema = ema.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "state_dict": ema.state_dict(), "anchors": [list(a) for a in mcfg.anchors],
                "seconds": stats["seconds"]}, tmp)
    tmp.replace(path)
    return BaselineResult(ema, stats["seconds"], False, path)


# ------------------------------------------------------------------------------------------ fine-tuning


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageSet, batches: int, batch_size: int, device: torch.device,
                   amp: str = "bf16", seed: int = 0) -> int:
    """AdaBN: reset every BatchNorm's running statistics and re-estimate them (cumulative average) from
    ``batches`` shuffled training batches without augmentation. Returns the number of images used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    model.to(device).train()
    seen = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        for i, (imgs, _) in enumerate(Batches(data, batch_size, shuffle=True, device=device, seed=seed)):
            if i >= batches:
                break
            with autocast(device, amp):
                model(imgs)
            seen += len(imgs)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return seen


def adapted_convs(split_model: SplitModel, n: int) -> list[int]:
    """Darknet indices of the edge convs that adapt to the cut: the first ``n`` after it, and the conv after
    any route that reads the cut layer directly (at j=5 route 20 carries conv 8's output to conv 21)."""
    layers = split_model.edge.layers
    convs = sorted(int(k) for k, m in layers.items() if isinstance(m, ConvBlock))
    out = set(convs[:n])
    if n > 0:
        for k, m in layers.items():
            nxt = layers[str(int(k) + 1)] if str(int(k) + 1) in layers else None
            if isinstance(m, Route) and split_model.cut_layer in m.sources and isinstance(nxt, ConvBlock):
                out.add(int(k) + 1)
    return sorted(out)


def finetune(
    split_model: SplitModel,
    baseline: TinyYOLOv3,
    data: ImageSet,
    cfg: TrainConfig,
    device: torch.device,
    distill: DistillConfig | None = None,
    progress: bool = True,
    adapt: AdaptConfig | None = AdaptConfig(),
) -> tuple[SplitModel, dict[str, float]]:
    """Quantization-aware fine-tuning of a split (and maybe pruned) model, optionally distilled from ``baseline``.

    With ``adapt`` (the default recipe, :class:`AdaptConfig`): AdaBN first, then the convs next to the cut
    learn at a higher rate and the deeper edge BatchNorms stay frozen. ``adapt=None`` trains every layer at
    ``cfg.lr`` with every BatchNorm in training mode.

    The feature distillation term compares the output of the edge's first conv (student) with the same layer
    of the baseline (teacher).
    """
    j = split_model.j
    groups, frozen, stats0 = None, (), {"bn_images": 0}
    if adapt is not None:
        stats0["bn_images"] = recalibrate_bn(split_model, data, adapt.bn_recalib_batches, cfg.batch_size, device,
                                             cfg.amp, cfg.seed)
        near = set(adapted_convs(split_model, adapt.adapt_convs)) if 0 < j < 6 else set()
        node = [p for m in split_model.node.layers.values() for p in m.parameters()]
        fast: list[nn.Parameter] = []
        rest: list[nn.Parameter] = []
        deep_bn: list[nn.Module] = []
        for k, m in split_model.edge.layers.items():
            (fast if int(k) in near else rest).extend(m.parameters())
            if int(k) not in near:
                deep_bn += [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        groups = [(node, adapt.node_lr_scale), (fast, adapt.adapt_lr_scale), (rest, 1.0)]
        frozen = tuple(deep_bn) if adapt.freeze_bn else ()
    taps = None
    if distill is not None and distill.feature_weight > 0 and 0 < j < 6:
        first_edge = min(int(k) for k, m in split_model.edge.layers.items() if hasattr(m, "conv"))
        taps = (split_model.edge.layers[str(first_edge)], baseline.layers[first_edge])
    teacher = baseline if distill is not None and (distill.output_weight > 0 or distill.feature_weight > 0) else None
    ema, stats = fit(split_model, head_config(split_model.cfg), split_model.cfg.input_size, data, cfg, device,
                     teacher=teacher, distill=distill, feature_taps=taps, desc=f"finetune j={j}",
                     progress=progress, param_groups=groups, frozen_bn=frozen)
    return ema.cpu().eval(), {**stats, **stats0}
