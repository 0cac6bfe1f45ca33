"""Training a learned bottleneck at the cut (:class:`models.bottleneck.BottleneckInterface`): the first stage of a
bottleneck design point, before the fine-tuning that every split point gets.

Teacher: the split model's own node and edge as they came from the baseline, frozen (eval mode; nothing but the
bottleneck trains). Student: node -> encoder -> noisy latent -> decoder -> the first ``distill_layers`` edge layers
with weights (0: none). Loss: the mean squared error between the student's and the teacher's tensor there, divided
by the teacher's variance on the first batch, plus ``lambda`` x the prior's bits per cut position (``H x W``) -
sc2bench's head distillation with a rate term (Matsubara et al.'s supervised compression; Ballé et al.'s noise
proxy for rounding). The edge's later layers are not run, so a step costs a node pass, the bottleneck and a few
layers. The node runs once, over the training images whose cut tensors fit a cache (:func:`node_features`);
batches are drawn from those (no augmentation).
"""

from __future__ import annotations

import time

import torch

from models.bottleneck import BottleneckInterface
from models.split import SplitModel
from objectives.data.images import ImageSet
from objectives.device import to_device
from objectives.distill import _until, tap_layers
from objectives.fit import TrainingDiverged
from objectives.settings import BottleneckConfig


def attach(split_model: SplitModel, latent: int, cfg: BottleneckConfig) -> BottleneckInterface:
    """Put a fresh bottleneck of ``latent`` channels in place of ``split_model``'s quantizer (a cut feature map)."""
    if not split_model.cut_point.is_split:
        raise ValueError(f"j={split_model.j}: a learned bottleneck needs a cut feature map")
    c, h, w = split_model.cut_shape()
    if h % cfg.stride or w % cfg.stride:
        raise ValueError(f"train.bottleneck.stride={cfg.stride} does not divide the {h}x{w} cut at j={split_model.j}")
    split_model.interface = BottleneckInterface(c, latent, cfg.bits, cfg.kernel, cfg.stride)
    return split_model.interface


FEATURE_CACHE_BYTES = 512 * 2 ** 20  # assumption: host memory the cached cut tensors may take (float16)


@torch.no_grad()
def node_features(split_model: SplitModel, data: ImageSet, device: torch.device, chunk: int = 32) -> torch.Tensor:
    """The frozen node's cut tensors of the first training images (no augmentation), as float16 on ``device``: as
    many images as fit :data:`FEATURE_CACHE_BYTES` (all 2,000 of the default data at every cut: 410 MB at j = 1). The
    node runs once, not once per step (measured on 2 cores, j = 4: 0.14 s a step with the node in the loop)."""
    p = split_model.cut_point  # a bottleneck's cut is unpruned: the table's full width
    n = max(1, min(len(data.images), FEATURE_CACHE_BYTES // (2 * p.channels * p.height * p.width)))
    out = []
    for i in range(0, n, chunk):
        x = torch.from_numpy(data.images[i:min(n, i + chunk)]).to(device).permute(0, 3, 1, 2).float() / 255
        out.append(split_model.node(x).to(torch.float16))
    return torch.cat(out)


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

    t0 = time.time()
    feats = node_features(split_model, data, device)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # standardized input, a latent of init_levels levels, the decoder at the channel means
        f = feats[torch.randperm(len(feats), generator=gen)[:cfg.batch_size * 8]].float()
        b.standardize(f, cfg.init_levels)
        var = max(float(target(f).var()), 1e-12)
    opt = torch.optim.Adam(b.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=cfg.lr * 0.05)
    b.train()
    b.noise = True
    loss0, loss, bpp = float("nan"), float("nan"), float("nan")
    step = 0
    try:
        for step in range(1, steps + 1):
            f = feats[torch.randint(0, len(feats), (cfg.batch_size,), generator=gen)].float()
            with torch.no_grad():
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
            if step == 1:
                loss0 = loss
    finally:
        b.noise = False
        b.eval()
        for p in split_model.parameters():
            p.requires_grad_(True)
    return {"bottleneck_steps": step, "bottleneck_seconds": time.time() - t0, "bottleneck_first_loss": loss0,
            "bottleneck_last_loss": loss, "bottleneck_bits_per_position": bpp}
