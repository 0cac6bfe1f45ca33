"""Accuracy and payload of a (split) detector on a validation set: predictions, COCO mAP, payload bytes per
codec from the real encoder, and the empirical entropy of the quantized codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models import YOLOHeadConfig, decode_heads, postprocess
from models.codec import CODECS, encode_detections, encode_features, encode_image, packed_nbytes
from models.image_codec import get_image_codec
from models.interface import QuantInterface
from models.split import SplitModel
from objectives.data.batches import Batches
from objectives.data.images import ImageSet
from objectives.device import to_device
from objectives.metrics import APResult, average_precision


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, head: YOLOHeadConfig, conf_threshold: float, nms_iou: float,
            batch_size: int = 32, device: torch.device | str = "cpu",
            max_det: int = 100) -> list[np.ndarray]:
    """Detections per image, (n, 6): x1, y1, x2, y2 (pixels), score, class; ``conf_threshold`` and ``nms_iou`` are
    the ``eval`` section's (conf/eval/default.yaml)."""
    to_device(model.eval(), device)
    out = []
    for imgs, _ in Batches(data, batch_size, device=device):
        dets = postprocess(decode_heads(model(imgs), head), conf_threshold, nms_iou, max_det=max_det)
        out.extend(d.cpu().numpy() for d in dets)
    return out


def ground_truth(data: ImageSet, size: int) -> list[np.ndarray]:
    """Labels as (m, 5) pixel boxes x1, y1, x2, y2, class."""
    gts = []
    for lab in data.labels:
        lab = np.asarray(lab, dtype=np.float64).reshape(-1, 5)
        c, cx, cy, w, h = lab.T
        gts.append(np.stack([(cx - w / 2) * size, (cy - h / 2) * size, (cx + w / 2) * size, (cy + h / 2) * size, c], 1))
    return gts


def evaluate_map(model: nn.Module, data: ImageSet, head: YOLOHeadConfig, size: int, conf_threshold: float,
                 nms_iou: float, device: torch.device | str = "cpu", batch_size: int = 32,
                 first: list[np.ndarray] = ()) -> APResult:
    """mAP of ``model`` on ``data``; ``first``: the detections :func:`predict` already gave for the first
    ``len(first)`` images (same settings), which are not predicted again."""
    dets = [*first, *predict(model, data.subset(len(first)), head, conf_threshold, nms_iou, batch_size, device)]
    return average_precision(dets, ground_truth(data, size), head.num_classes)


@torch.no_grad()
def transmitted_map(split_model: SplitModel, data: ImageSet, head: YOLOHeadConfig, size: int, conf_threshold: float,
                    nms_iou: float, device: torch.device | str = "cpu", batch_size: int = 32) -> APResult:
    """mAP of the detections a node that runs the whole model sends (score >= ``conf_threshold``, coordinates,
    class and score as the u16 rows of :func:`models.codec.encode_detections`): what the edge actually receives."""
    from models.codec import decode as decode_payload

    dets = []
    for d in predict(split_model, data, head, conf_threshold, nms_iou, batch_size, device):
        got = decode_payload(encode_detections(torch.from_numpy(d), "none")).detections.numpy()
        dets.append(got)
    return average_precision(dets, ground_truth(data, size), head.num_classes)


@dataclass(frozen=True)
class PayloadStats:
    """Payload sizes over a data set, from the real encoder (header included).

    Attributes:
        raw_bytes: bytes before the codec (packed codes, 8-bit image or detection rows; for a coded image the mean
            size of the JPEG/WebP files, rounded up).
        mean_bytes, max_bytes: per codec.
        entropy_bytes: empirical entropy of the codes (order-0, over the whole set) x values / 8: a lower
            bound for any codec that codes values independently.
        best_codec: the codec with the smallest mean.
        table_bytes: per entropy codec (``ans``, ``ans_ctx``), the bytes of its fitted tables the node keeps.
    """

    raw_bytes: int
    mean_bytes: dict[str, float]
    max_bytes: dict[str, int]
    entropy_bytes: float
    best_codec: str
    table_bytes: dict[str, int] = field(default_factory=dict)


@torch.no_grad()
def payload_stats(split_model: SplitModel, data: ImageSet, codecs: tuple[str, ...] = tuple(CODECS),
                  head: YOLOHeadConfig | None = None, conf_threshold: float | None = None,
                  nms_iou: float | None = None,
                  batch_size: int = 32, device: torch.device | str = "cpu", limit: int | None = None) -> PayloadStats:
    """Encode every image's payload at the partition point with each codec. An entropy codec (``ans``,
    ``ans_ctx``) uses the interface's fitted model (:meth:`SplitModel.fit_entropy`); where the image or the
    detections cross it does not apply and the payload is sent as with ``none``."""
    to_device(split_model.eval(), device)
    entropy = [c for c in codecs if CODECS[c].entropy]
    if entropy and split_model.cut_point.is_split:
        missing = sorted(set(entropy) - set(split_model.interface.entropy))
        if missing:
            raise ValueError(f"payload_stats: no fitted entropy model for {missing} (SplitModel.fit_entropy first)")
    sizes: dict[str, list[int]] = {c: [] for c in codecs}
    hist = np.zeros(256, dtype=np.int64)
    raw = 0
    seen = 0
    files: list[int] = []
    for imgs, _ in Batches(data, batch_size, device=device):
        if split_model.coded_image:  # the node's JPEG/WebP file, framed (and maybe compressed again)
            iface = split_model.interface
            ic = get_image_codec(iface.codec)
            for q in iface.quantize(imgs).permute(0, 2, 3, 1).cpu().numpy():
                data_ = ic.encode(q, iface.quality)
                files.append(len(data_))
                for c in codecs:
                    sizes[c].append(len(encode_image(data_, ic.name, q.shape[:2], iface.quality,
                                                     "none" if CODECS[c].entropy else c)))
        elif split_model.cut_point.sends_detections:
            if head is None or conf_threshold is None or nms_iou is None:
                raise ValueError("payload_stats where the node sends detections needs the head config, "
                                 "eval.payload_conf_threshold and eval.nms_iou to decode them")
            dets = postprocess(decode_heads(split_model.node(imgs), head), conf_threshold, nms_iou)
            for d in dets:
                for c in codecs:
                    sizes[c].append(len(encode_detections(d, "none" if CODECS[c].entropy else c)))
                raw = max(raw, len(d) * 12)
        else:
            iface: QuantInterface = split_model.interface
            f = split_model.node(imgs)
            codes = iface.quantize(f).cpu()
            hist += np.bincount(codes.numpy().ravel(), minlength=256)
            raw = packed_nbytes(codes[0].numel(), iface.bits)
            for q in codes:
                for c in codecs:
                    coded = c if split_model.cut_point.is_split or not CODECS[c].entropy else "none"  # raw image
                    sizes[c].append(len(encode_features(q, iface.bits, float(iface.mu), float(iface.max), coded,
                                                        model=iface.entropy.get(c))))
        seen += len(imgs)
        if limit and seen >= limit:
            break
    if files:  # a coded image: the mean file size, rounded up
        raw = int(np.ceil(np.mean(files)))
    mean = {c: float(np.mean(v)) for c, v in sizes.items()}
    entropy_bytes = 0.0
    if hist.sum():
        p = hist[hist > 0] / hist.sum()
        per_image_values = hist.sum() / max(seen, 1)
        entropy_bytes = float(-(p * np.log2(p)).sum() * per_image_values / 8)
    tables = {c: split_model.interface.entropy[c].table_bytes for c in entropy if split_model.cut_point.is_split}
    return PayloadStats(raw, mean, {c: int(max(v)) for c, v in sizes.items()}, entropy_bytes,
                        min(mean, key=mean.get), tables)
