"""When a split model is fine-tuned - the one home of ``train.finetune_when`` and the subset check.

``always``: every model that has something to adapt to (a quantized cut, a lossy coded image) is fine-tuned.
``needed``: the model is first scored as split, quantized and pruned; where that already meets the study's
constraint (mAP@0.5 >= baseline - th, Eq. 4) it is kept as it is. Before the full validation set, the first
``eval.precheck_images`` of it are scored: an estimate more than ``eval.precheck_margin`` below the requirement
sends the model to fine-tuning without its full-set score (a wrong estimate costs time, never a number), and the
full-set score reuses the subset's detections. ``eval.before_finetune`` scores every model before fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.split import SplitModel
from models.yolo import YOLOHeadConfig
from objectives.accuracy import evaluate_map, ground_truth, predict, transmitted_map
from objectives.data.images import ImageSet
from objectives.metrics import APResult, average_precision
from objectives.settings import EvalConfig, TrainSettings


@dataclass(frozen=True)
class Policy:
    """The fine-tuning decision for one run: ``train``'s ``finetune_enabled`` / ``finetune_when``, ``eval``'s
    ``before_finetune`` and subset check, and the mAP@0.5 the study requires (None: no requirement - the final
    training and the design table fine-tune every model)."""

    train: TrainSettings
    eval: EvalConfig
    required_map50: float | None = None

    @property
    def skips(self) -> bool:
        """Whether a model that already meets :attr:`required_map50` keeps its un-fine-tuned weights."""
        return self.train.finetune_when == "needed" and self.required_map50 is not None

    def tunes(self, sm: SplitModel) -> bool:
        """Whether ``sm`` is fine-tuned at all (something to adapt to, fine-tuning enabled)."""
        return self.train.finetune_enabled and sm.adapts


@dataclass(frozen=True)
class Before:
    """What is known before fine-tuning: the score (None where it was not taken) and whether the model is kept as it
    is (not fine-tuned: nothing to adapt, or it meets the requirement)."""

    score: APResult | None
    keep: bool


def precheck(sm: SplitModel, val: ImageSet, p: Policy, head: YOLOHeadConfig, size: int,
             device: torch.device) -> tuple[bool, list[np.ndarray]]:
    """The subset check: (worth a full-set score, the subset's detections for it to reuse). Without a subset (0
    images, or as many as the set has): (True, [])."""
    ev = p.eval
    if ev.precheck_images <= 0 or ev.precheck_images >= len(val):
        return True, []
    sub = val.subset(0, ev.precheck_images)
    dets = predict(sm, sub, head, ev.conf_threshold, ev.nms_iou, device=device)
    est = average_precision(dets, ground_truth(sub, size), head.num_classes).map50
    return est >= p.required_map50 - ev.precheck_margin, dets


def before_finetune(sm: SplitModel, val: ImageSet, p: Policy, head: YOLOHeadConfig, size: int,
                    device: torch.device) -> Before:
    """Score ``sm`` as far as the policy needs before (or instead of) fine-tuning."""
    ev = p.eval
    if sm.cut_point.sends_detections:  # the edge only ever gets what the node sends: score it on that
        return Before(transmitted_map(sm, val, head, size, ev.payload_conf_threshold, ev.nms_iou, device), True)
    if not p.tunes(sm):
        return Before(evaluate_map(sm, val, head, size, ev.conf_threshold, ev.nms_iou, device), True)
    reuse: list[np.ndarray] = []
    if not ev.before_finetune:
        if not p.skips:
            return Before(None, False)  # fine-tuned whatever its score
        worth, reuse = precheck(sm, val, p, head, size, device)
        if not worth:
            return Before(None, False)
    r = evaluate_map(sm, val, head, size, ev.conf_threshold, ev.nms_iou, device, first=reuse)
    return Before(r, p.skips and r.map50 >= p.required_map50)
