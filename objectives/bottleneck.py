"""Training a learned bottleneck at the cut (:class:`models.bottleneck.BottleneckInterface`): the first stage of a
bottleneck design point, before the fine-tuning that every split point gets.

Teacher: the split model's own node and edge as they came from the baseline, frozen (eval mode; nothing but the
bottleneck trains). Student: node -> encoder -> noisy latent -> decoder -> the first ``distill_layers`` edge layers
with weights (0: none). Loss: the mean squared error between the student's and the teacher's tensor there, divided
by the teacher's variance on the first batch, plus ``lambda`` x the prior's bits per cut position (``H x W``) -
sc2bench's head distillation with a rate term (Matsubara et al.'s supervised compression; Ballé et al.'s noise
proxy for rounding). The edge's later layers are not run, so a step costs a node pass, the bottleneck and a few
layers. The node runs once per batch without gradients.
"""

from __future__ import annotations

import time

import torch

from models.bottleneck import BottleneckInterface
from models.split import SplitModel
from objectives.data.batches import Batches
from objectives.data.images import ImageSet
from objectives.device import to_device
from objectives.distill import _until, tap_layers
from objectives.fit import TrainingDiverged
from objectives.settings import BottleneckConfig


def attach(split_model: SplitModel, latent: int, cfg: BottleneckConfig) -> BottleneckInterface:
    """Put a fresh bottleneck of ``latent`` channels in place of ``split_model``'s quantizer (a cut feature map)."""
    if not split_model.cut_point.is_split:
        raise ValueError(f"j={split_model.j}: a learned bottleneck needs a cut feature map")
    c, _, _ = split_model.cut_shape()
    split_model.interface = BottleneckInterface(c, latent, cfg.bits, cfg.kernel)
    return split_model.interface


def train_bottleneck(split_model: SplitModel, data: ImageSet, cfg: BottleneckConfig, rate_lambda: float,
                     steps: int, device: torch.device, seed: int = 0) -> dict[str, float]:
    """Train ``split_model``'s bottleneck for ``steps`` Adam steps (``cfg``'s batch and learning rate) on distillation
    + ``rate_lambda`` x bits per cut position. Returns steps, seconds, the first and the last loss and the last
    bits per position."""
    b = split_model.interface
    if not isinstance(b, BottleneckInterface):
        raise ValueError(f"j={split_model.j}: the split model has no bottleneck (objectives.bottleneck.attach)")
    torch.manual_seed(seed)
    to_device(split_model, device).eval()
    for p in split_model.parameters():
        p.requires_grad_(False)
    for p in b.parameters():
        p.requires_grad_(True)
    tap = None
    if cfg.distill_layers > 0:
        tap = split_model.edge.layers[str(tap_layers(split_model, cfg.distill_layers)[-1])]

    def target(f: torch.Tensor) -> torch.Tensor:
        return f if tap is None else _until(split_model.edge, tap, f)

    batches = Batches(data, cfg.batch_size, shuffle=True, device=device, seed=seed)
    first = True
    with torch.no_grad():  # standardized input, a latent of init_levels levels, the decoder at the channel means
        imgs, _ = next(iter(batches))
        f = split_model.node(imgs)
        b.standardize(f, cfg.init_levels)
        var = max(float(target(f).var()), 1e-12)
    opt = torch.optim.Adam(b.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=cfg.lr * 0.05)
    b.train()
    b.noise = True
    t0, step, loss0, loss, bpp = time.time(), 0, float("nan"), float("nan"), float("nan")
    try:
        while step < steps:
            for imgs, _ in batches:
                with torch.no_grad():
                    f = split_model.node(imgs)
                    want = target(f)
                y, rate = b.code(f)
                got = target(y)
                positions = f.shape[0] * f.shape[2] * f.shape[3]
                d = ((got - want) ** 2).mean() / var
                total = d + rate_lambda * rate / positions
                if not torch.isfinite(total):
                    raise TrainingDiverged(f"bottleneck training at j={split_model.j} diverged at step {step} "
                                           f"(loss {float(total)})")
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sched.step()
                loss, bpp = float(total.detach()), float(rate.detach()) / positions
                if first:
                    loss0, first = loss, False
                step += 1
                if step >= steps:
                    break
    finally:
        b.noise = False
        b.eval()
        for p in split_model.parameters():
            p.requires_grad_(True)
    return {"bottleneck_steps": step, "bottleneck_seconds": time.time() - t0, "bottleneck_first_loss": loss0,
            "bottleneck_last_loss": loss, "bottleneck_bits_per_position": bpp}
