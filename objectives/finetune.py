"""Fine-tuning of split, quantized, pruned models, quantization-aware through the straight-through interface.

Recipe (:class:`objectives.settings.AdaptConfig`, measured on the embedded data, figures in the README): first
re-estimate every BatchNorm's running statistics on a few training batches (AdaBN: the layers after the cut now
see a quantized, maybe pruned input); then train with the first conv layer(s) after the cut at a much higher
learning rate than the rest, and the BatchNorm layers deeper in the edge frozen. Knowledge distillation from the
baseline, on the detection outputs and on the feature after the edge's first layer, is optional (off by default:
raw-output MSE was measured to hurt), and so is a head-distillation stage before the fine-tuning
(:mod:`objectives.distill`, off: measured not to help at 20-40 steps, docs/method.md).
"""

from __future__ import annotations

import torch
from torch import nn

from models import Darknet
from models.split import SplitModel
from objectives.data.batches import Batches
from objectives.data.images import ImageSet
from objectives.device import autocast, to_device
from objectives.distill import head_distill
from objectives.fit import fit
from objectives.settings import AdaptConfig, DistillConfig, TrainConfig


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageSet, batches: int, batch_size: int, device: torch.device,
                   amp: str = "bf16", seed: int = 0) -> int:
    """AdaBN: reset every BatchNorm's running statistics and re-estimate them (cumulative average) from
    ``batches`` shuffled training batches without augmentation. Returns the number of images used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    to_device(model, device).train()
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


def finetune(
    split_model: SplitModel,
    baseline: Darknet,
    data: ImageSet,
    cfg: TrainConfig,
    device: torch.device,
    distill: DistillConfig | None = None,
    progress: bool = True,
    adapt: AdaptConfig | None = None,
) -> tuple[SplitModel, dict[str, float]]:
    """Quantization-aware fine-tuning of a split (and maybe pruned) model, optionally distilled from ``baseline``.

    With ``adapt`` (the recipe of conf/train/default.yaml, :class:`AdaptConfig`): AdaBN first, then the convs next
    to the cut learn at a higher rate and the deeper edge BatchNorms stay frozen. ``adapt=None`` trains every layer at
    ``cfg.lr`` with every BatchNorm in training mode.

    The feature distillation term compares the output of the edge's first conv (student) with the same layer
    of the baseline (teacher).
    """
    j = split_model.j
    groups, frozen, stats0 = None, (), {"bn_images": 0}
    if distill is not None and distill.head_steps > 0 and split_model.bottleneck is None:
        # head distillation first (objectives/distill.py; a bottleneck's own training is one already)
        stats0.update(head_distill(split_model, baseline, data, cfg, distill.head_steps, distill.head_layers, device,
                                   distill.head_lr_scale))
    if adapt is not None:
        stats0["bn_images"] = recalibrate_bn(split_model, data, adapt.bn_recalib_batches, cfg.batch_size, device,
                                             cfg.amp, cfg.seed)
        near = set(split_model.adapted_convs(adapt.adapt_convs)) if split_model.adapts else set()
        node = [p for m in split_model.node.layers.values() for p in m.parameters()]
        node_scale = adapt.node_lr_scale
        fast: list[nn.Parameter] = []
        if split_model.bottleneck is not None:  # the node and the encoder stay as trained with the rate term (the
            node_scale = 0.0  # prior's tables code what they send); the decoder adapts with the layers after the cut
            fast += list(split_model.bottleneck.decoder.parameters())
        rest: list[nn.Parameter] = []
        deep_bn: list[nn.Module] = []
        for k, m in split_model.edge.layers.items():
            (fast if int(k) in near else rest).extend(m.parameters())
            if int(k) not in near:
                deep_bn += [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        groups = [(node, node_scale), (fast, adapt.adapt_lr_scale), (rest, adapt.edge_lr_scale)]
        frozen = tuple(deep_bn) if adapt.freeze_bn else ()
    taps = None
    if distill is not None and distill.feature_weight > 0 and split_model.cut_point.is_split:
        first_edge = min(int(k) for k, m in split_model.edge.layers.items() if hasattr(m, "conv"))
        taps = (split_model.edge.layers[str(first_edge)], baseline.layers[first_edge])
    teacher = baseline if distill is not None and (distill.output_weight > 0 or distill.feature_weight > 0) else None
    ema, stats = fit(split_model, split_model.cfg.head(), split_model.cfg.input_size, data, cfg, device,
                     teacher=teacher, distill=distill, feature_taps=taps, desc=f"finetune j={j}",
                     progress=progress, param_groups=groups, frozen_bn=frozen)
    return ema.cpu().eval(), {**stats, **stats0}
