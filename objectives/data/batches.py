"""In-memory batching with vectorized training augmentation (flip, HSV-style colour, scale jitter).

Images stay uint8 in one tensor; each batch is augmented on the training device in a few tensor ops
(``affine_grid`` / ``grid_sample`` for scale and translation), which is much faster on 2 CPU cores than a
per-sample Python pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from objectives.data.images import ImageSet


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (values in conf/train/). Probabilities in [0, 1]; gains are +/- ranges around 1;
    ``min_box_fraction``: a box cut by the frame to less than this fraction of its area is dropped."""

    flip_lr: float
    flip_ud: float
    brightness: float
    saturation: float
    contrast: float
    scale: tuple[float, float]
    translate: float
    min_box_fraction: float

    def __post_init__(self) -> None:
        for n in ("flip_lr", "flip_ud", "min_box_fraction"):
            if not 0 <= getattr(self, n) <= 1:
                raise ValueError(f"augment.{n}={getattr(self, n)} must be in [0, 1]")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"augment.scale={self.scale} must be 0 < low <= high")


class Batches:
    """Batches of (images (B, 3, S, S) float in [0, 1], targets (T, 6): image, class, cx, cy, w, h).

    Args:
        data: the image set (all images the same square size).
        batch_size: images per batch.
        shuffle: reshuffle every epoch (seeded by ``seed`` and the epoch).
        augment: augmentation, or None for evaluation.
        device: where batches are produced.
    """

    def __init__(self, data: ImageSet, batch_size: int, shuffle: bool = False, augment: AugmentConfig | None = None,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        if len(data) == 0:
            raise ValueError("the image set is empty")
        self.images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)  # uint8 NCHW view
        self.labels = [torch.from_numpy(np.asarray(lab, dtype=np.float32).reshape(-1, 5)) for lab in data.labels]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.device = torch.device(device)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        self.epoch += 1
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            imgs = self.images[idx].to(self.device, non_blocking=True).float().div_(255)
            targets = torch.cat([torch.cat([torch.full((len(self.labels[i]), 1), float(k)), self.labels[i]], 1)
                                 for k, i in enumerate(idx.tolist())]).to(self.device)
            if self.augment is not None:
                imgs, targets = augment_batch(imgs, targets, self.augment, g)
            yield imgs, targets


def augment_batch(imgs: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig, g: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch in place of a per-sample pipeline. Boxes follow every geometric change."""
    b, dev = imgs.shape[0], imgs.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=g) * (hi - lo) + lo).to(dev)

    t = targets.clone()
    # colour: brightness, contrast, saturation
    gray = imgs.mean(1, keepdim=True)
    imgs = gray + (imgs - gray) * u(1 - cfg.saturation, 1 + cfg.saturation).view(b, 1, 1, 1)
    mean = imgs.mean((1, 2, 3), keepdim=True)
    imgs = mean + (imgs - mean) * u(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1)
    imgs = (imgs * u(1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)).clamp_(0, 1)
    # geometry: output u = s * x + shift in [-1, 1] coordinates (zoom in for s > 1), then flips
    s = u(*cfg.scale)
    tx, ty = u(-cfg.translate, cfg.translate) * 2, u(-cfg.translate, cfg.translate) * 2
    fx = torch.where(u(0, 1) < cfg.flip_lr, -1.0, 1.0)
    fy = torch.where(u(0, 1) < cfg.flip_ud, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = fx / s
    theta[:, 1, 1] = fy / s
    theta[:, 0, 2] = -tx * fx / s
    theta[:, 1, 2] = -ty * fy / s
    grid = F.affine_grid(theta, list(imgs.shape), align_corners=False)
    imgs = F.grid_sample(imgs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if len(t):
        k = t[:, 0].long()
        cx = ((t[:, 2] * 2 - 1) * fx[k] * s[k] + tx[k] + 1) / 2
        cy = ((t[:, 3] * 2 - 1) * fy[k] * s[k] + ty[k] + 1) / 2
        w, h = t[:, 4] * s[k], t[:, 5] * s[k]
        x1, x2 = (cx - w / 2).clamp(0, 1), (cx + w / 2).clamp(0, 1)
        y1, y2 = (cy - h / 2).clamp(0, 1), (cy + h / 2).clamp(0, 1)
        keep = ((x2 - x1) * (y2 - y1)) >= cfg.min_box_fraction * w * h
        keep &= (x2 - x1 > 1e-3) & (y2 - y1 > 1e-3)
        t = torch.stack([t[:, 0], t[:, 1], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)[keep]
    return imgs, t
