"""The baseline: the unsplit detector trained from scratch once, cached by a hash of its settings.

Recipe (measured to reach the mAP target on the embedded data on 2 cores; see README): :func:`objectives.fit.fit`
with k-means anchors from the training boxes, grid-sensitive centres and multi-cell positives in the loss
(:class:`models.yolo.YOLOLoss`), scale/flip/colour augmentation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from models import TinyYOLOv3, TinyYOLOv3Config
from objectives.data.synthetic import ImageSet
from objectives.fit import fit
from objectives.settings import TrainConfig


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
    ema, stats = fit(model, mcfg.head(), mcfg.input_size, train_data, cfg, device, desc="baseline",
                     progress=progress)
    ema = ema.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "state_dict": ema.state_dict(), "anchors": [list(a) for a in mcfg.anchors],
                "seconds": stats["seconds"]}, tmp)
    tmp.replace(path)
    return BaselineResult(ema, stats["seconds"], False, path)
