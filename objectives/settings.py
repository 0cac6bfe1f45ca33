"""The settings objectives/ takes: frozen dataclasses with range checks and no defaults.

``conf/`` is the one source of default values (search/config.py builds these from the composed YAML, so a
key missing there is an error naming it, not a silent Python default). Tests and notebooks get a complete set
with ``search.config.compose([...overrides])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 - typing generics for the config builder

from objectives.data.batches import AugmentConfig

# Field metadata: whether a setting changes measured results (the study's and the design table's settings identity,
# search.settings). Absent: always. "never": it does not (the final training's budget). "when finetune_when=needed":
# only under that policy (the subset check, which `always` never reads). "when bottleneck searched": only where
# the space has learned bottlenecks (space.bottleneck.latent). ("off when", name, value): not while the
# dataclass's field ``name`` has ``value`` (an opt-in stage that is off: studies recorded before it existed match).
RESULTS = "affects_results"


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings for baseline training or fine-tuning.

    ``epochs`` (float: a fraction of an epoch is allowed) or ``steps`` (if > 0, wins) sets the budget;
    ``max_minutes`` stops earlier on wall time (0: no limit).
    """

    epochs: float
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    min_lr_ratio: float
    ema_decay: float
    amp: str
    seed: int
    max_minutes: float
    grad_clip: float
    augment: AugmentConfig

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "weight_decay", "warmup_epochs", "min_lr_ratio", "ema_decay", "max_minutes",
                     "grad_clip"):
            v = getattr(self, name)
            if isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, name, float(v))  # 26 and 26.0 are one config (and one cache key)
        if self.amp not in ("bf16", "fp16", "none"):
            raise ValueError(f"train.amp={self.amp!r} not in ['bf16', 'fp16', 'none']")
        if self.epochs <= 0 and self.steps <= 0:
            raise ValueError(f"train.epochs={self.epochs} and train.steps={self.steps}: one must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from the baseline during fine-tuning (0 disables a term).

    Attributes:
        output_weight: MSE between student and teacher raw head outputs (objectness + boxes).
        feature_weight: MSE on the output of the edge's first conv layer.
        head_steps: steps of head distillation before the fine-tuning (:mod:`objectives.distill`); 0: none.
        head_layers: the edge layers with weights that stage trains; their last one's output is matched.
        head_lr_scale: that stage's learning rate as a multiple of the fine-tuning's.
    """

    output_weight: float
    feature_weight: float
    head_steps: int = field(metadata={RESULTS: ("off when", "head_steps", 0)})
    head_layers: int = field(metadata={RESULTS: ("off when", "head_steps", 0)})
    head_lr_scale: float = field(metadata={RESULTS: ("off when", "head_steps", 0)})

    def __post_init__(self) -> None:
        if self.head_steps < 0:
            raise ValueError(f"train.distill.head_steps={self.head_steps} must be >= 0 (0: no head distillation)")
        if self.head_layers < 1:
            raise ValueError(f"train.distill.head_layers={self.head_layers} must be >= 1")
        if not self.head_lr_scale > 0:
            raise ValueError(f"train.distill.head_lr_scale={self.head_lr_scale} must be > 0")


@dataclass(frozen=True)
class AdaptConfig:
    """How fine-tuning treats the layers around the cut (defaults measured; see the README).

    Attributes:
        bn_recalib_batches: before fine-tuning, re-estimate every BatchNorm's running mean and variance over
            this many training batches without augmentation and without gradients (AdaBN); 0 skips it.
        adapt_convs: the first this-many conv layers after the cut learn at ``lr * adapt_lr_scale``.
        adapt_lr_scale: learning-rate multiplier of those layers.
        node_lr_scale: learning-rate multiplier of the node's layers.
        edge_lr_scale: learning-rate multiplier of the edge's other layers (0 freezes them: the backward pass
            then computes no weight gradients there, and none at all on a frozen node).
        freeze_bn: BatchNorm layers of the edge past the adapted ones keep their running statistics (eval
            mode) while fine-tuning; the node's and the adapted layers' BatchNorms train.
    """

    bn_recalib_batches: int
    adapt_convs: int
    adapt_lr_scale: float
    node_lr_scale: float
    edge_lr_scale: float
    freeze_bn: bool

    def __post_init__(self) -> None:
        for name in ("bn_recalib_batches", "adapt_convs", "adapt_lr_scale", "node_lr_scale", "edge_lr_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (a scale of 0 freezes those layers)")


@dataclass(frozen=True)
class BottleneckConfig:
    """How a learned bottleneck at the cut is trained (:mod:`objectives.bottleneck`; the design point's latent width
    and rate weight lambda are searched, ``space.bottleneck``).

    Attributes:
        bits: the latent's integer range, ``-2**(bits-1) .. 2**(bits-1) - 1`` (its codes' width).
        kernel: the encoder's and the decoder's conv kernel (odd).
        stride: the encoder's stride (the latent is H / stride x W / stride; the decoder's depth-to-space undoes it);
            at most ``kernel``. 1: the cut's resolution (recorded before strides existed: matches).
        steps: training steps of the bottleneck in the search (node and edge frozen).
        final_steps: the same in ``mode=finalize`` (the final training's budget: not a search-time setting).
        batch_size, lr: Adam's batch and learning rate.
        distill_layers: the loss matches the teacher's output of this many edge layers with weights after the cut
            (head distillation through the frozen edge); 0: the cut tensor itself.
        init_levels: the encoder starts with a latent whose standard deviation is this many integer levels.
    """

    bits: int
    kernel: int
    stride: int = field(metadata={RESULTS: ("off when", "stride", 1)})
    steps: int
    final_steps: int = field(metadata={RESULTS: "never"})
    batch_size: int
    lr: float
    distill_layers: int
    init_levels: float

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"train.bottleneck.bits={self.bits} must be in 2..8")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"train.bottleneck.kernel={self.kernel} must be an odd number >= 1")
        if not 1 <= self.stride <= self.kernel:
            raise ValueError(f"train.bottleneck.stride={self.stride} must be in 1..train.bottleneck.kernel "
                             f"({self.kernel}): a larger stride skips pixels")
        for name in ("steps", "final_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.bottleneck.{name}={getattr(self, name)} must be >= 1")
        if self.distill_layers < 0:
            raise ValueError(f"train.bottleneck.distill_layers={self.distill_layers} must be >= 0")
        for name in ("lr", "init_levels"):
            if not getattr(self, name) > 0:
                raise ValueError(f"train.bottleneck.{name}={getattr(self, name)} must be > 0")


FINETUNE_WHEN = ("always", "needed")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section: baseline from scratch, per-trial fine-tuning and its recipe, and the final training
    of the front (``mode=finalize``: the same recipe with the ``final`` budget).

    ``finetune_when``: ``always`` fine-tunes every split model; ``needed`` first measures the model as split,
    quantized and pruned, and keeps it un-fine-tuned when its mAP@0.5 on the full validation set already meets
    the study's constraint (Eq. 4; :attr:`objectives.objective.EvalSettings.required_map50`).
    """

    baseline: TrainConfig
    finetune: TrainConfig
    final: TrainConfig = field(metadata={RESULTS: "never"})  # the final training's budget, not the search's
    distill: DistillConfig
    adapt: AdaptConfig
    bottleneck: BottleneckConfig = field(metadata={RESULTS: "when bottleneck searched"})  # space.bottleneck
    finetune_enabled: bool
    finetune_when: str

    def __post_init__(self) -> None:
        if self.finetune_when not in FINETUNE_WHEN:
            raise ValueError(f"train.finetune_when={self.finetune_when!r} not in {list(FINETUNE_WHEN)}")


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section: which detector, with which weights, and how its cut is de-quantized.

    Attributes:
        cfg: an embedded darknet cfg name (``yolov3-tiny``, ``yolov4-tiny``) or the path of a ``.cfg``.
        weights: darknet ``.weights`` or a PyTorch state dict ``.pt`` of that cfg, used as the baseline as is;
            None: the baseline is trained here.
        box: ``darknet``, ``v5`` or ``auto`` (darknet when ``weights`` are given, else v5); see
            :class:`models.yolo.YOLOHeadConfig`.
        partition_layers: the darknet layers that may end the node part; None = every single-tensor cut.
        width: channel multiplier (1.0 is the cfg's network; smaller only for smoke tests; 1.0 with weights).
        kmeans_anchors: anchors from k-means on the training boxes (else the cfg's, scaled to the input); only
            when the baseline is trained here.
        recon: edge de-quantization, ``paper`` (Eq. 6), ``midpoint`` or ``centroid``.
        range_percentile: Eq. 5's max = this percentile of ``|f - mu|`` on the calibration set.
    """

    cfg: str
    weights: Optional[str]  # noqa: UP045
    box: str
    partition_layers: Optional[List[int]]  # noqa: UP006, UP045
    width: float
    kmeans_anchors: bool
    recon: str
    range_percentile: float

    @property
    def box_style(self) -> str:
        """The box parametrization ``auto`` resolves to."""
        return self.box if self.box != "auto" else ("darknet" if self.weights else "v5")

    def __post_init__(self) -> None:
        if self.box not in ("auto", "darknet", "v5"):
            raise ValueError(f"model.box={self.box!r} not in ['auto', 'darknet', 'v5']")
        if self.weights is not None and self.width != 1.0:
            raise ValueError(f"model.width={self.width} with model.weights: trained weights fix the width (use 1.0)")
        if not 0 < self.range_percentile <= 100:
            raise ValueError(f"model.range_percentile={self.range_percentile} must be in (0, 100]")
        if not 0 < self.width <= 4:
            raise ValueError(f"model.width={self.width} must be in (0, 4]")
        if self.recon not in ("paper", "midpoint", "centroid"):
            raise ValueError(f"model.recon={self.recon!r} not in ['paper', 'midpoint', 'centroid']")


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval`` section: mAP settings (the paper reports mAP@0.5 at confidence 0.45; COCO's convention is
    0.001), calibration and payload sample sizes, and the subset check of ``train.finetune_when=needed``: before
    the full validation set, ``precheck_images`` of it are scored, and the full set only where that estimate is
    within ``precheck_margin`` of the required mAP@0.5 (0 images: the full set always)."""

    conf_threshold: float
    nms_iou: float
    payload_conf_threshold: float
    calib_images: int
    payload_images: int
    before_finetune: bool
    precheck_images: int = field(metadata={RESULTS: "when finetune_when=needed"})  # read only by `needed`
    precheck_margin: float = field(metadata={RESULTS: "when finetune_when=needed"})

    def __post_init__(self) -> None:
        for k in ("conf_threshold", "nms_iou", "payload_conf_threshold"):
            if not 0 <= getattr(self, k) < 1:
                raise ValueError(f"eval.{k}={getattr(self, k)} must be in [0, 1)")
        for k in ("calib_images", "payload_images"):
            if getattr(self, k) < 1:
                raise ValueError(f"eval.{k}={getattr(self, k)} must be >= 1")
        if self.precheck_images < 0:
            raise ValueError(f"eval.precheck_images={self.precheck_images} must be >= 0 (0: no subset check)")
        if not 0 <= self.precheck_margin <= 1:
            raise ValueError(f"eval.precheck_margin={self.precheck_margin} must be in [0, 1]")
