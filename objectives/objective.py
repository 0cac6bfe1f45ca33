"""Turn a :class:`DesignPoint` into measured numbers.

Two parts (DESIGN.md): the accuracy part (split, calibrate, prune, fine-tune, mAP, payload bytes per codec,
MACs) is expensive and depends only on :meth:`DesignPoint.accuracy_key`; the cost part (energy, latency)
is a pure function of its results and runs for every radio x codec in microseconds.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from models import TinyYOLOv3, YOLOLoss, calibrate, prune, split
from models.split import SplitModel
from objectives.accuracy import evaluate_map, payload_stats
from objectives.costs import CodecProfile, CostBreakdown, EdgeProfile, NodeWork, ProcessorProfile, RadioProfile
from objectives.costs import evaluate_costs as _evaluate_costs
from objectives.costs.measure import time_edge_ms
from objectives.data.batches import Batches
from objectives.data.synthetic import ImageSet
from objectives.design import DesignPoint, conv_channels
from objectives.train import AdaptConfig, DistillConfig, TrainConfig, finetune, head_config


@dataclass(frozen=True)
class EvalSettings:
    conf_threshold: float = 0.001
    nms_iou: float = 0.5
    payload_conf_threshold: float = 0.25
    calib_images: int = 256
    payload_images: int = 100
    codecs: tuple[str, ...] = ("none", "zlib", "zstd")
    finetune: TrainConfig | None = None
    distill: DistillConfig | None = None
    adapt: AdaptConfig | None = None
    measure_edge: bool = False
    progress: bool = False
    recon: str = "centroid"
    range_percentile: float = 99.9
    before_finetune: bool = True


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
    seconds: float = 0.0
    edge_measured_ms: float | None = None

    def as_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, d: dict[str, Any]) -> AccuracyResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def _images(data: ImageSet, n: int) -> torch.Tensor:
    return torch.from_numpy(data.images[:n]).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def _calibrate(sm: SplitModel, x: torch.Tensor, device: torch.device, percentile: float) -> None:
    if 1 <= sm.j <= 5:
        sm.eval().to(device)
        calibrate(sm.interface, lambda: (sm.node(x[i:i + 64].to(device)) for i in range(0, len(x), 64)), percentile)


@torch.no_grad()
def _peak_activation(node: nn.Module, x: torch.Tensor) -> int:
    """Largest input + output (values, one image) of any leaf layer on the node."""
    peak = [x[0].numel()]

    def hook(m, inp, out):
        if torch.is_tensor(out) and inp and torch.is_tensor(inp[0]):
            peak.append(inp[0][0].numel() + out[0].numel())

    hs = [m.register_forward_hook(hook) for m in node.modules() if not list(m.children())]
    try:
        node(x[:1])
    finally:
        for h in hs:
            h.remove()
    return int(max(peak))


def evaluate_accuracy(point: DesignPoint, baseline: TinyYOLOv3, train: ImageSet, val: ImageSet,
                      s: EvalSettings, device: torch.device) -> AccuracyResult:
    """Split, calibrate, prune (step 1 + 2), fine-tune and measure one design point."""
    t0 = time.time()
    cfg = baseline.cfg
    head = head_config(cfg)
    sm = split(baseline, point.j, bits=point.bits, recon=s.recon)
    calib = _images(train, s.calib_images)
    _calibrate(sm, calib, device, s.range_percentile)
    keep = point.keep_map()
    kept: dict[str, list[int]] = {}
    if keep:
        loss_fn = None
        if point.criterion == "taylor":
            yl = YOLOLoss(head, cfg.input_size)
            imgs, targets = next(iter(Batches(train, 32, device=device)))
            loss_fn = lambda m: yl(m(imgs), targets)[0]  # noqa: E731
        sm.to(device)
        done = prune(sm, keep, point.criterion, example_input=calib[:1].to(device), loss_fn=loss_fn)
        kept = {str(k): [int(a), int(b)] for k, (a, b) in done.items()}
        _calibrate(sm, calib, device, s.range_percentile)  # the cut feature changed: re-calibrate mu and max
    tune = s.finetune is not None and 1 <= point.j <= 5
    before = float("nan")
    if not tune or s.before_finetune:
        r = evaluate_map(sm, val, head, cfg.input_size, s.conf_threshold, s.nms_iou, device)
        before = r.map50
    ft_seconds, ft_steps = 0.0, 0
    if tune:
        sm, stats = finetune(sm, baseline, train, s.finetune, device, s.distill, progress=s.progress,
                             adapt=s.adapt)
        ft_seconds, ft_steps = stats["seconds"], int(stats["steps"])
        r = evaluate_map(sm, val, head, cfg.input_size, s.conf_threshold, s.nms_iou, device)
    sub = type(val)(val.images[:s.payload_images], val.labels[:s.payload_images], val.class_names)
    ps = payload_stats(sm, sub, s.codecs, head=head, conf_threshold=s.payload_conf_threshold, nms_iou=s.nms_iou,
                       device=device)
    macs = sm.macs()
    sm.cpu()
    c, h, w = sm.cut_shape()
    weights = sum(p.numel() for p in sm.node.parameters())
    edge_ms = None
    if s.measure_edge:
        example = sm.node(calib[:1]) if point.j < 6 else None
        edge_ms = time_edge_ms(sm.edge.to(device), sm.interface(example).to(device)) if example is not None else 0.0
    return AccuracyResult(
        key=point.accuracy_key(conv_channels(cfg)), j=point.j, map50=r.map50, map50_95=r.map50_95,
        map50_before_finetune=before,
        node_macs=macs.node, edge_macs=macs.edge,
        node_macs_per_layer={str(k): int(v) for k, v in macs.node_per_layer.items()},
        cut_shape=[c, h, w], feature_values=c * h * w if 1 <= point.j <= 5 else 0, raw_bytes=ps.raw_bytes,
        payload_mean_bytes=ps.mean_bytes, payload_max_bytes=ps.max_bytes, entropy_bytes=ps.entropy_bytes,
        best_codec=ps.best_codec, weight_count=int(weights), peak_activation_values=_peak_activation(sm.node, calib),
        kept_channels=kept, finetune_seconds=ft_seconds, finetune_steps=ft_steps, seconds=time.time() - t0,
        edge_measured_ms=edge_ms,
    )


def node_work(acc: AccuracyResult, codec: str) -> NodeWork:
    """The cost model's view of a measured point for one codec (mean payload over the val images)."""
    if codec not in acc.payload_mean_bytes:
        raise ValueError(f"codec={codec!r} was not measured for {acc.key}; measured: {sorted(acc.payload_mean_bytes)}")
    return NodeWork(j=acc.j, node_macs=acc.node_macs, edge_macs=acc.edge_macs, feature_values=acc.feature_values,
                    raw_bytes=acc.raw_bytes, payload_bytes=int(math.ceil(acc.payload_mean_bytes[codec])),
                    weight_count=acc.weight_count, peak_activation_values=acc.peak_activation_values)


def evaluate_costs(acc: AccuracyResult, node: ProcessorProfile, edge: EdgeProfile, radio: RadioProfile,
                   codec: CodecProfile) -> CostBreakdown:
    return _evaluate_costs(node_work(acc, codec.name), node, edge, radio, codec, acc.edge_measured_ms)


def constraint_value(map50: float, baseline_map50: float, th: float) -> float:
    """Eq. 4 as an Optuna constraint (feasible when <= 0): (baseline - th) - mAP."""
    return (baseline_map50 - th) - map50


def attrs_for(acc: AccuracyResult, cost: CostBreakdown, baseline_map50: float, constraint: float,
              feasible: bool) -> dict[str, Any]:
    return {
        "mAP50": acc.map50, "mAP50_95": acc.map50_95, "mAP50_before_finetune": acc.map50_before_finetune,
        "baseline_mAP50": baseline_map50, "constraint": constraint, "feasible": feasible,
        "infeasible_reason": cost.reason if not cost.feasible else (
            "" if constraint <= 0 else "mAP below baseline - th"),
        "payload_bytes": node_work(acc, cost.codec).payload_bytes, "raw_bytes": acc.raw_bytes,
        "node_macs": acc.node_macs, "edge_macs": acc.edge_macs, "accuracy_key": acc.key,
        "energy": {k: v for k, v in cost.as_dict().items() if k.endswith("_mj")},
        "latency": {k: v for k, v in cost.as_dict().items() if k.endswith("_ms")},
        "accuracy": acc.as_attrs(),
    }
