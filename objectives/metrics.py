"""COCO-style average precision for boxes, equal to pycocotools' COCOeval on the same detections.

It follows COCOeval's bbox evaluation for area range "all": per image and class, detections sorted by score
(stable) and cut to ``max_dets``; each detection greedily takes the unmatched ground truth of highest IoU
>= the threshold; per class, all detections are ranked by score, precision is made monotone from the right
and read at 101 recall points (0, 0.01, ..., 1). A class with no ground truth is left out of the mean. The
constraint metric of the paper (Eq. 4) is AP at IoU 0.5.

Boxes are xyxy in pixels; IoU uses no +1 (as COCO's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class APResult:
    """mAP@0.5, mAP@[.5:.95] and per-class AP@0.5 (NaN for a class without ground truth)."""

    map50: float
    map50_95: float
    ap50_per_class: tuple[float, ...]
    num_gt: int
    num_det: int


def _iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(D, 4) x (G, 4) xyxy -> (D, G) IoU in float64."""
    lt = np.maximum(d[:, None, :2], g[None, :, :2])
    rb = np.minimum(d[:, None, 2:], g[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    ad = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    ag = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    union = ad[:, None] + ag[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching. ``ious`` (D, G) for score-sorted detections -> (T, D) bool true positives.

    All thresholds advance together, one detection at a time (the greedy order is the score order, so it stays a
    loop over detections), and only detections that reach the lowest threshold with some ground truth are
    visited: the others cannot match at any threshold."""
    t_count, (d_count, g_count) = len(thresholds), ious.shape
    tp = np.zeros((t_count, d_count), dtype=bool)
    if d_count == 0 or g_count == 0:
        return tp
    floors = np.minimum(thresholds, 1 - 1e-10)
    taken = np.zeros((t_count, g_count), dtype=bool)
    rows = np.arange(t_count)
    for di in np.flatnonzero(ious.max(axis=1) >= floors.min()):
        row = np.where(taken, -1.0, ious[di][None, :])
        best = row.max(axis=1)
        ok = best >= floors
        if not ok.any():
            continue
        # COCOeval walks the ground truths in order and keeps the last one at the best IoU
        m = g_count - 1 - np.argmax(row[:, ::-1] == best[:, None], axis=1)
        taken[rows[ok], m[ok]] = True
        tp[ok, di] = True
        if taken.all():
            break
    return tp


def _ap(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> np.ndarray:
    """(T, D) true positives + (D,) scores of one class over all images -> (T,) AP."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[:, order]
    tps = np.cumsum(tp, axis=1, dtype=np.float64)
    fps = np.cumsum(~tp, axis=1, dtype=np.float64)
    out = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        rc = tps[t] / n_gt
        pr = tps[t] / (fps[t] + tps[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        q = np.zeros(len(RECALL_POINTS))
        valid = idx < len(pr)
        q[valid] = pr[idx[valid]]
        out[t] = q.mean()
    return out


def average_precision(
    detections: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    num_classes: int,
    max_dets: int = 100,
    thresholds: np.ndarray = IOU_THRESHOLDS,
) -> APResult:
    """COCO AP over a dataset.

    Args:
        detections: per image, (n, 6) array: x1, y1, x2, y2, score, class.
        ground_truth: per image, (m, 5) array: x1, y1, x2, y2, class.
        num_classes: classes 0..num_classes-1.
        max_dets: detections kept per image and class (COCO's 100).
        thresholds: IoU thresholds; the first must be 0.5 for ``map50``.

    Returns:
        :class:`APResult`. With no ground truth at all, both means are NaN.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    tps: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, dtype=np.int64)
    n_det = 0
    for det, gt in zip(detections, ground_truth, strict=True):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 5)
        if det.size and (det[:, 5].min() < 0 or det[:, 5].max() >= num_classes):
            raise ValueError(f"detection class outside 0..{num_classes - 1}")
        if gt.size and (gt[:, 4].min() < 0 or gt[:, 4].max() >= num_classes):
            raise ValueError(f"ground-truth class outside 0..{num_classes - 1}")
        for c in np.union1d(det[:, 5], gt[:, 4]).astype(int):
            d = det[det[:, 5] == c]
            g = gt[gt[:, 4] == c]
            n_gt[c] += len(g)
            if not len(d):
                continue
            d = d[np.argsort(-d[:, 4], kind="mergesort")][:max_dets]
            n_det += len(d)
            tps[c].append(_match(_iou(d[:, :4], g[:, :4]), thresholds))
            scores[c].append(d[:, 4])
    aps = np.full((num_classes, len(thresholds)), np.nan)
    for c in range(num_classes):
        if n_gt[c] == 0:
            continue
        if not tps[c]:
            aps[c] = 0.0
            continue
        aps[c] = _ap(np.concatenate(tps[c], axis=1), np.concatenate(scores[c]), int(n_gt[c]))
    valid = ~np.isnan(aps[:, 0])
    if not valid.any():
        return APResult(float("nan"), float("nan"), tuple(aps[:, 0]), 0, n_det)
    return APResult(float(aps[valid, 0].mean()), float(aps[valid].mean()), tuple(float(a) for a in aps[:, 0]),
                    int(n_gt.sum()), n_det)
