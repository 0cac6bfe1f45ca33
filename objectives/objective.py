"""Turn a :class:`DesignPoint` into measured numbers.

Two parts (docs/design.md): the accuracy part (split, calibrate, prune, fine-tune, mAP, payload bytes per codec,
MACs) is expensive and depends only on :meth:`DesignPoint.accuracy_key`; the cost part (energy, latency)
is a pure function of its results and runs for every radio x codec in microseconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models import Darknet, YOLOLoss, cut_points, prune, split
from models.split import SplitModel
from objectives.accuracy import evaluate_map, ground_truth, payload_stats, predict, transmitted_map
from objectives.costs import (
    CodecProfile,
    CostBreakdown,
    EdgeProfile,
    ImageCodecProfile,
    NodeWork,
    ProcessorProfile,
    RadioProfile,
)
from objectives.costs import evaluate_costs as _evaluate_costs
from objectives.costs.measure import time_edge_ms
from objectives.data.batches import Batches
from objectives.data.synthetic import ImageSet
from objectives.design import DesignPoint
from objectives.finetune import finetune
from objectives.metrics import average_precision
from objectives.settings import EvalConfig, ModelConfig, TrainSettings


@dataclass(frozen=True)
class EvalSettings:
    """What :func:`evaluate_accuracy` needs of the run configuration: whole sections, never copied field by field.

    Attributes:
        eval, model, train: the ``eval``, ``model`` and ``train`` sections (conf/).
        codecs: compression algorithms (:data:`models.codec.CODECS`) whose payload sizes are measured.
        measure_edge: time the edge half on this machine (``platform/edge=measured``).
        progress: progress bars while fine-tuning.
        required_map50: the mAP@0.5 the study's constraint requires (baseline - th, Eq. 4); with
            ``train.finetune_when=needed`` a model that reaches it before fine-tuning is not fine-tuned. None: every
            split model is fine-tuned (the final training, the design table).
    """

    eval: EvalConfig
    model: ModelConfig
    train: TrainSettings
    codecs: tuple[str, ...]
    measure_edge: bool
    progress: bool
    required_map50: float | None = None

    @property
    def skips_finetune(self) -> bool:
        """Whether a model that already meets :attr:`required_map50` keeps its un-fine-tuned weights."""
        return self.train.finetune_when == "needed" and self.required_map50 is not None


@dataclass(frozen=True)
class AccuracyResult:
    """Everything measured for one trained design point (JSON-able, stored in trial user attrs)."""

    key: str
    j: int
    map50: float
    map50_95: float
    map50_before_finetune: float
    node_macs: int
    edge_macs: int
    node_macs_per_layer: dict[str, int]
    cut_shape: list[int]
    feature_values: int
    raw_bytes: int
    payload_mean_bytes: dict[str, float]
    payload_max_bytes: dict[str, int]
    entropy_bytes: float
    best_codec: str
    weight_count: int
    peak_activation_values: int
    kept_channels: dict[str, list[int]] = field(default_factory=dict)
    finetune_seconds: float = 0.0
    finetune_steps: int = 0
    finetune_skipped: bool = False  # train.finetune_when=needed: it met the constraint before fine-tuning
    image_codec: str = ""  # j=0 with a lossy image codec: its name and quality (the edge scores decoded images)
    quality: int = 0
    seconds: float = 0.0
    edge_measured_ms: float | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def as_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, d: dict[str, Any]) -> AccuracyResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def _images(data: ImageSet, n: int) -> torch.Tensor:
    return torch.from_numpy(data.images[:n]).permute(0, 3, 1, 2).float() / 255


def _precheck(sm: SplitModel, val: ImageSet, s: EvalSettings, head, size: int,
              device: torch.device) -> list[np.ndarray] | None:
    """The subset check before the full set: None when the mAP@0.5 on the first ``eval.precheck_images``
    validation images is more than ``eval.precheck_margin`` below the required one (the model is then fine-tuned
    without its full-set score; a wrong None costs the fine-tuning time, never a wrong number), else those images'
    detections, which the full set's score reuses (empty without a subset: 0 images, or the whole set)."""
    ev = s.eval
    if ev.precheck_images <= 0 or ev.precheck_images >= len(val):
        return []
    sub = val.subset(0, ev.precheck_images)
    dets = predict(sm, sub, head, ev.conf_threshold, ev.nms_iou, device=device)
    est = average_precision(dets, ground_truth(sub, size), head.num_classes).map50
    return dets if est >= s.required_map50 - ev.precheck_margin else None


def evaluate_accuracy(point: DesignPoint, baseline: Darknet, train: ImageSet, val: ImageSet,
                      s: EvalSettings, device: torch.device, trained: dict | None = None) -> AccuracyResult:
    """Split, calibrate, prune (step 1 + 2), fine-tune and measure one design point. With ``trained`` (a dict), it
    also receives the trained split model (``model``, on the CPU) and the kept channel indices of every pruned
    conv (``kept``), for keeping the weights."""
    t0 = time.time()
    phases: dict[str, float] = {}
    clock = [t0]

    def lap(name: str) -> None:  # wall time since the previous lap, added to ``name``
        now = time.time()
        phases[name] = phases.get(name, 0.0) + now - clock[0]
        clock[0] = now

    cfg, ev = baseline.cfg, s.eval
    head, table = cfg.head(), cut_points(cfg)
    sm = split(baseline, point.j, bits=point.bits, recon=s.model.recon,
               image_codec=point.image_codec if point.coded_image else None, quality=point.quality)
    calib = _images(train, ev.calib_images)
    sm.calibrate(calib, device, s.model.range_percentile)
    lap("calibrate")
    keep = point.keep_map(table)
    kept: dict[str, list[int]] = {}
    if keep:
        loss_fn = None
        if point.criterion == "taylor":
            yl = YOLOLoss(head, cfg.input_size)
            imgs, targets = next(iter(Batches(train, 32, device=device)))
            loss_fn = lambda m: yl(m(imgs), targets)[0]  # noqa: E731
        sm.to(device)
        kept_idx: dict[int, list[int]] = {}
        done = prune(sm, keep, point.criterion, example_input=calib[:1].to(device), loss_fn=loss_fn, kept=kept_idx)
        if trained is not None:
            trained["kept"] = kept_idx
        kept = {str(k): [int(a), int(b)] for k, (a, b) in done.items()}
        sm.calibrate(calib, device, s.model.range_percentile)  # the cut feature changed: re-calibrate mu and max
        lap("prune")
    tune = s.train.finetune_enabled and sm.adapts
    skip = False
    before = float("nan")
    needed = tune and s.skips_finetune  # scored first, fine-tuned only below the requirement
    first = None if not needed else [] if ev.before_finetune else _precheck(sm, val, s, head, cfg.input_size, device)
    if sm.cut_point.sends_detections:  # the edge only ever gets what the node sends: score it on that
        r = transmitted_map(sm, val, head, cfg.input_size, ev.payload_conf_threshold, ev.nms_iou, device)
        before = r.map50
    elif not tune or ev.before_finetune or first is not None:
        r = evaluate_map(sm, val, head, cfg.input_size, ev.conf_threshold, ev.nms_iou, device, first=first or [])
        before = r.map50
        skip = needed and r.map50 >= s.required_map50
    lap("evaluate")
    ft_seconds, ft_steps = 0.0, 0
    if tune and not skip:
        sm, stats = finetune(sm, baseline, train, s.train.finetune, device, s.train.distill, progress=s.progress,
                             adapt=s.train.adapt)
        ft_seconds, ft_steps = stats["seconds"], int(stats["steps"])
        lap("finetune")
        r = evaluate_map(sm, val, head, cfg.input_size, ev.conf_threshold, ev.nms_iou, device)
        lap("evaluate")
    ps = payload_stats(sm, val.subset(0, ev.payload_images), s.codecs, head=head,
                       conf_threshold=ev.payload_conf_threshold, nms_iou=ev.nms_iou, device=device)
    lap("payload")
    macs = sm.macs()
    sm.cpu()
    if trained is not None:
        trained["model"] = sm
        trained.setdefault("kept", {})
    c, h, w = sm.cut_shape()
    weights = sum(p.numel() for p in sm.node.parameters())
    edge_ms = None
    if s.measure_edge:
        example = None if sm.cut_point.sends_detections else sm.node(calib[:1])
        edge_ms = time_edge_ms(sm.edge.to(device), sm.interface(example).to(device)) if example is not None else 0.0
    peak = sm.node_peak_activation(calib)
    lap("macs_memory")
    return AccuracyResult(
        key=point.accuracy_key(table), j=point.j, map50=r.map50, map50_95=r.map50_95,
        map50_before_finetune=before,
        node_macs=macs.node, edge_macs=macs.edge,
        node_macs_per_layer={str(k): int(v) for k, v in macs.node_per_layer.items()},
        cut_shape=[c, h, w], feature_values=c * h * w if sm.cut_point.is_split else 0, raw_bytes=ps.raw_bytes,
        payload_mean_bytes=ps.mean_bytes, payload_max_bytes=ps.max_bytes, entropy_bytes=ps.entropy_bytes,
        best_codec=ps.best_codec, weight_count=int(weights), peak_activation_values=peak,
        kept_channels=kept, finetune_seconds=ft_seconds, finetune_steps=ft_steps, finetune_skipped=skip,
        image_codec=point.image_codec if point.coded_image else "", quality=point.quality if point.coded_image else 0,
        seconds=time.time() - t0,
        edge_measured_ms=edge_ms, phase_seconds=phases,
    )


def node_work(acc: AccuracyResult, codec: str) -> NodeWork:
    """The cost model's view of a measured point for one codec (mean payload over the val images)."""
    if codec not in acc.payload_mean_bytes:
        raise ValueError(f"codec={codec!r} was not measured for {acc.key}; measured: {sorted(acc.payload_mean_bytes)}")
    return NodeWork(j=acc.j, node_macs=acc.node_macs, edge_macs=acc.edge_macs, feature_values=acc.feature_values,
                    raw_bytes=acc.raw_bytes, payload_bytes=int(math.ceil(acc.payload_mean_bytes[codec])),
                    weight_count=acc.weight_count, peak_activation_values=acc.peak_activation_values,
                    image_pixels=acc.cut_shape[1] * acc.cut_shape[2] if acc.image_codec else 0)


def evaluate_costs(acc: AccuracyResult, node: ProcessorProfile, edge: EdgeProfile, radio: RadioProfile,
                   codec: CodecProfile, images: dict[str, ImageCodecProfile] | None = None) -> CostBreakdown:
    """The costs of a measured point; ``images``: image format -> the node's image-codec profile (a coded image)."""
    image = None
    if acc.image_codec:
        if not images or acc.image_codec not in images:
            raise ValueError(f"{acc.key}: node profile {node.name!r} names no image-codec profile for "
                             f"{acc.image_codec!r} (platform.node.image_encoders)")
        image = images[acc.image_codec]
    return _evaluate_costs(node_work(acc, codec.codec), node, edge, radio, codec, acc.edge_measured_ms, image)


def constraint_value(map50: float, baseline_map50: float, th: float) -> float:
    """Eq. 4 as an Optuna constraint (feasible when <= 0): (baseline - th) - mAP."""
    return (baseline_map50 - th) - map50
