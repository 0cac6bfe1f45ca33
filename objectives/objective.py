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

import torch

from models import Darknet, YOLOLoss, cut_points, prune, split
from models.codec import CODECS
from models.split import SplitModel
from objectives.accuracy import evaluate_map, payload_stats
from objectives.bottleneck import attach, train_bottleneck
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
from objectives.data.images import ImageSet
from objectives.design import DesignPoint
from objectives.finetune import finetune
from objectives.policy import Policy, before_finetune
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
    def policy(self) -> Policy:
        """When a model is fine-tuned (:mod:`objectives.policy`)."""
        return Policy(self.train, self.eval, self.required_map50)

    @property
    def skips_finetune(self) -> bool:
        """Whether a model that already meets :attr:`required_map50` keeps its un-fine-tuned weights."""
        return self.policy.skips


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
    entropy_table_bytes: dict[str, int] = field(default_factory=dict)  # per entropy codec: its tables on the node
    head_distill_steps: int = 0  # head distillation steps before the fine-tuning (in finetune_seconds)
    bottleneck_steps: int = 0  # a learned bottleneck: its training steps (train.bottleneck) and their wall time
    bottleneck_seconds: float = 0.0

    def as_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, d: dict[str, Any]) -> AccuracyResult:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def _images(data: ImageSet, n: int) -> torch.Tensor:
    return torch.from_numpy(data.images[:n]).permute(0, 3, 1, 2).float() / 255


@dataclass
class Measurement:
    """One measured design point: its result, the trained split model (on the CPU) and the kept channel indices of
    every pruned conv (darknet conv -> indices into its unpruned outputs), for keeping the weights."""

    result: AccuracyResult
    model: SplitModel
    kept: dict[int, list[int]]


class _Laps:
    """Wall time per phase: each lap adds the time since the previous one to its phase."""

    def __init__(self) -> None:
        self.start = self.last = time.time()
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


def _prune(point: DesignPoint, sm: SplitModel, table, train: ImageSet, calib: torch.Tensor, s: EvalSettings,
           device: torch.device) -> tuple[dict[int, list[int]], dict[str, list[int]]]:
    """Steps 1 + 2 and the re-calibration of the changed cut: (kept indices per conv, (before, after) channels per
    conv); empty where nothing is pruned."""
    keep = point.keep_map(table)
    if not keep:
        return {}, {}
    loss_fn = None
    if point.criterion == "taylor":
        yl = YOLOLoss(sm.cfg.head(), sm.cfg.input_size)
        imgs, targets = next(iter(Batches(train, 32, device=device)))
        loss_fn = lambda m: yl(m(imgs), targets)[0]  # noqa: E731
    sm.to(device)
    kept_idx: dict[int, list[int]] = {}
    done = prune(sm, keep, point.criterion, example_input=calib[:1].to(device), loss_fn=loss_fn, kept=kept_idx)
    sm.calibrate(calib, device, s.model.range_percentile)  # the cut feature changed: re-calibrate mu and max
    return kept_idx, {str(k): [int(a), int(b)] for k, (a, b) in done.items()}


def measure(point: DesignPoint, baseline: Darknet, train: ImageSet, val: ImageSet, s: EvalSettings,
            device: torch.device) -> Measurement:
    """Split, calibrate, prune (step 1 + 2), fine-tune where the policy says (:mod:`objectives.policy`) and measure
    one design point."""
    laps = _Laps()
    cfg, ev = baseline.cfg, s.eval
    head, table = cfg.head(), cut_points(cfg)
    sm = split(baseline, point.j, bits=point.bits, recon=s.model.recon,
               image_codec=point.image_codec if point.coded_image else None, quality=point.quality)
    calib = _images(train, ev.calib_images)
    bn_stats: dict[str, float] = {}
    if point.bottleneck:  # a learned bottleneck in place of the quantizer, trained first (objectives.bottleneck)
        bc = s.train.bottleneck
        attach(sm, point.bottleneck, bc)
        bn_stats = train_bottleneck(sm, train, bc, point.rate_lambda, bc.steps, device, s.train.finetune.seed)
        laps.lap("bottleneck")
    sm.calibrate(calib, device, s.model.range_percentile)
    laps.lap("calibrate")
    kept_idx, kept = _prune(point, sm, table, train, calib, s, device)
    if kept_idx:
        laps.lap("prune")
    policy = s.policy
    before = before_finetune(sm, val, policy, head, cfg.input_size, device)
    laps.lap("evaluate")
    r, ft_seconds, ft_steps, head_steps = before.score, 0.0, 0, 0
    if not before.keep:
        sm, stats = finetune(sm, baseline, train, s.train.finetune, device, s.train.distill, progress=s.progress,
                             adapt=s.train.adapt)
        ft_seconds, ft_steps = stats["seconds"] + stats.get("head_seconds", 0.0), int(stats["steps"])
        head_steps = int(stats.get("head_steps", 0))
        laps.lap("finetune")
        r = evaluate_map(sm, val, head, cfg.input_size, ev.conf_threshold, ev.nms_iou, device)
        laps.lap("evaluate")
    sm.fit_entropy(calib, device, tuple(c for c in s.codecs if CODECS[c].entropy))  # on the trained model's codes
    ps = payload_stats(sm, val.subset(0, ev.payload_images), s.codecs, head=head,
                       conf_threshold=ev.payload_conf_threshold, nms_iou=ev.nms_iou, device=device)
    laps.lap("payload")
    macs = sm.macs()
    sm.cpu()
    c, h, w = sm.cut_shape()
    weights = sum(p.numel() for p in sm.node.parameters())
    if sm.bottleneck is not None:  # the encoder's weights live on the node too
        weights += sum(p.numel() for p in sm.bottleneck.encoder.parameters())
    edge_ms = None
    if s.measure_edge:
        example = None if sm.cut_point.sends_detections else sm.node(calib[:1])
        edge_ms = time_edge_ms(sm.edge.to(device), sm.interface(example).to(device)) if example is not None else 0.0
    peak = sm.node_peak_activation(calib)
    laps.lap("macs_memory")
    result = AccuracyResult(
        key=point.accuracy_key(table), j=point.j, map50=r.map50, map50_95=r.map50_95,
        map50_before_finetune=before.score.map50 if before.score is not None else float("nan"),
        node_macs=macs.node, edge_macs=macs.edge,
        node_macs_per_layer={str(k): int(v) for k, v in macs.node_per_layer.items()},
        cut_shape=[c, h, w], feature_values=c * h * w if sm.cut_point.is_split else 0, raw_bytes=ps.raw_bytes,
        payload_mean_bytes=ps.mean_bytes, payload_max_bytes=ps.max_bytes, entropy_bytes=ps.entropy_bytes,
        best_codec=ps.best_codec, weight_count=int(weights), peak_activation_values=peak,
        kept_channels=kept, finetune_seconds=ft_seconds, finetune_steps=ft_steps,
        finetune_skipped=policy.tunes(sm) and before.keep,
        image_codec=point.image_codec if point.coded_image else "", quality=point.quality if point.coded_image else 0,
        seconds=time.time() - laps.start, edge_measured_ms=edge_ms, phase_seconds=laps.phases,
        entropy_table_bytes=ps.table_bytes, head_distill_steps=head_steps,
        bottleneck_steps=int(bn_stats.get("bottleneck_steps", 0)),
        bottleneck_seconds=float(bn_stats.get("bottleneck_seconds", 0.0)),
    )
    return Measurement(result, sm, kept_idx)


def evaluate_accuracy(point: DesignPoint, baseline: Darknet, train: ImageSet, val: ImageSet,
                      s: EvalSettings, device: torch.device) -> AccuracyResult:
    """:func:`measure`'s result alone (the trained model is dropped)."""
    return measure(point, baseline, train, val, s, device).result


def node_work(acc: AccuracyResult, codec: str) -> NodeWork:
    """The cost model's view of a measured point for one codec (mean payload over the val images)."""
    if codec not in acc.payload_mean_bytes:
        raise ValueError(f"codec={codec!r} was not measured for {acc.key}; measured: {sorted(acc.payload_mean_bytes)}")
    return NodeWork(j=acc.j, node_macs=acc.node_macs, edge_macs=acc.edge_macs, feature_values=acc.feature_values,
                    raw_bytes=acc.raw_bytes, payload_bytes=int(math.ceil(acc.payload_mean_bytes[codec])),
                    weight_count=acc.weight_count, peak_activation_values=acc.peak_activation_values,
                    image_pixels=acc.cut_shape[1] * acc.cut_shape[2] if acc.image_codec else 0,
                    codec_flash_bytes=int(acc.entropy_table_bytes.get(codec, 0)))


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
