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

from models import Darknet, DetectorConfig
from objectives.data.images import ImageSet
from objectives.fit import fit
from objectives.settings import ModelConfig, TrainConfig


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


def detector_config(model: ModelConfig, size: int, num_classes: int) -> DetectorConfig:
    """The detector of the ``model`` section at ``size`` px and ``num_classes``. A detector trained here uses this
    project's recipe settings (YOLOv5 box parametrization, batch-norm epsilon 1e-4, as for the README's figures);
    imported weights keep darknet's (``exp`` boxes, the cfg's ``scale_x_y``, epsilon 1e-5)."""
    parts = tuple(model.partition_layers) if model.partition_layers is not None else None
    bn_eps = 1e-5 if model.weights else 1e-4  # 1e-5: darknet's (assumption, models/darknet.py); 1e-4: our recipe's
    return DetectorConfig(cfg=model.cfg, num_classes=num_classes, input_size=size, width=model.width,
                          box=model.box_style, bn_eps=bn_eps, partitions=parts)


@dataclass(frozen=True)
class BaselineResult:
    model: Darknet
    seconds: float
    cached: bool
    path: Path


def _cache_key(model_cfg: DetectorConfig, data_key: str, train: TrainConfig, kmeans: bool) -> str:
    cfg_text = hashlib.sha256(Path(model_cfg.path).read_bytes()).hexdigest()  # the cfg's content, not its name
    blob = json.dumps({"v": 2, "model": asdict(model_cfg), "cfg": cfg_text, "data": data_key, "train": asdict(train),
                       "kmeans": kmeans}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_baseline(
    model_cfg: DetectorConfig,
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
            model = Darknet(mcfg)
            model.load_state_dict(ckpt["state_dict"])
            if ckpt.get("key") != key:
                raise ValueError("checkpoint key mismatch")
            return BaselineResult(model.eval(), float(ckpt.get("seconds", 0.0)), True, path)
        except Exception as e:  # noqa: BLE001 - any bad cache is rebuilt, never a crash
            warnings.warn(f"baseline cache {path} is unusable ({type(e).__name__}: {e}); retraining", stacklevel=2)
    mcfg = model_cfg
    if kmeans:
        wh = np.concatenate([lab[:, 3:5] for lab in train_data.labels if len(lab)]) * model_cfg.input_size
        k = len(model_cfg.cfg_anchors)
        # anchors are stored in pixels at the cfg's [net] width (416 for the embedded cfgs)
        scaled = kmeans_anchors(wh, k, seed=cfg.seed) * (model_cfg.net_width / model_cfg.input_size)
        mcfg = replace(model_cfg, anchors=tuple(map(tuple, scaled.round(2).tolist())))
    torch.manual_seed(cfg.seed)
    model = Darknet(mcfg)
    ema, stats = fit(model, mcfg.head(), mcfg.input_size, train_data, cfg, device, desc="baseline",
                     progress=progress)
    ema = ema.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"key": key, "state_dict": ema.state_dict(), "anchors": [list(a) for a in mcfg.anchors],
                "seconds": stats["seconds"]}, tmp)
    tmp.replace(path)
    return BaselineResult(ema, stats["seconds"], False, path)


class WeightsError(ValueError):
    """Trained weights that do not fit the cfg or the data; the message is one line naming both sides."""


def weights_digest(path: str | Path) -> str:
    """First 12 hex digits of the file's SHA-256: names the weights in the study, the report and the exports."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def load_baseline(model_cfg: DetectorConfig, weights: str | Path, class_names: list[str] | tuple[str, ...]
                  ) -> BaselineResult:
    """The user's trained detector as the baseline: darknet ``.weights`` (:func:`models.darknet.read_weights`) or a
    PyTorch state dict (``.pt``/``.pth``, loaded with ``weights_only=True``; a checkpoint dict with a
    ``state_dict``/``model`` entry is accepted). The class count of the cfg's ``[yolo]`` layers and of the weights
    must equal the data's."""
    from models.darknet_weights import read_weights

    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights={str(weights)!r}: no such file")
    n = len(class_names)
    cfg_classes = {int(s.get("classes") or 80) for s in model_cfg.darknet.layers if s.kind == "yolo"}
    if cfg_classes != {n}:
        raise WeightsError(f"model.cfg {model_cfg.name}.cfg has classes={sorted(cfg_classes)[0]} in its [yolo] layers "
                           f"but the data has {n} ({', '.join(class_names[:5])}{', ...' if n > 5 else ''}); use "
                           f"a cfg and weights trained for these {n} classes")
    model = Darknet(model_cfg)
    if path.suffix.lower() in (".pt", ".pth"):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one line
            raise WeightsError(f"model.weights={str(path)!r}: not a PyTorch state dict "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        if isinstance(sd, dict) and not any(torch.is_tensor(v) for v in sd.values()):
            sd = sd.get("state_dict", sd.get("model", sd))
        if not isinstance(sd, dict):
            raise WeightsError(f"model.weights={str(path)!r}: expected a state dict, found {type(sd).__name__}")
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            raise WeightsError(f"model.weights={path.name} does not fit {model_cfg.name}.cfg: missing keys "
                               f"{missing[:3]}{' ...' if len(missing) > 3 else ''}, unexpected keys "
                               f"{unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        bad = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if tuple(sd[k].shape) != tuple(v.shape)]
        if bad:
            k, theirs, ours = bad[0]
            raise WeightsError(f"model.weights={path.name}: {k} has shape {theirs}, {model_cfg.name}.cfg at "
                               f"{n} classes needs {ours}" + (f" ({len(bad) - 1} more)" if len(bad) > 1 else ""))
        model.load_state_dict(sd)
    else:
        read_weights(model, path)
    return BaselineResult(model.eval(), 0.0, True, path)
