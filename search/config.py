"""The run configuration: frozen dataclasses built from the composed Hydra config, checked field by field.

``load_run_config(cfg)`` turns the DictConfig into :class:`RunConfig` (plain values from here on). Any
unknown key, wrong type or out-of-range value raises :class:`ConfigError` with one line naming the key and
what is allowed — before anything trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional  # noqa: UP035 - typing generics for the builder

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from models.codec import CODECS
from models.prune import CRITERIA
from models.split import PARTITIONS
from objectives.train import AdaptConfig, DistillConfig, TrainConfig
from search.profiles import ConfigError, _build, available, profile_from_dict


def _subset(key: str, values: list[Any], allowed: list[Any]) -> None:
    if not values:
        raise ConfigError(f"{key}=[] must name at least one of {allowed}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{key}: {bad[0]!r} not in {allowed}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}={values} has duplicates")


@dataclass(frozen=True)
class Range:
    """A float range for a keep ratio: (low, high] inside (0, 1]; ``log`` samples on a log scale."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SpaceConfig:
    """The design space. Keep ratios: ``cut_keep`` for the conv that feeds the cut (step 1), ``layer_keep``
    for each earlier node conv (step 2); both are only sampled for 1 <= j <= 5."""

    partitions: List[int] = field(default_factory=lambda: list(PARTITIONS))  # noqa: UP006
    bits: List[int] = field(default_factory=lambda: [1, 2, 4, 8])  # noqa: UP006
    cut_keep: Range = field(default_factory=lambda: Range(0.01, 1.0, True))
    layer_keep: Range = field(default_factory=lambda: Range(0.1, 1.0, False))
    prune_earlier: bool = True
    criteria: List[str] = field(default_factory=lambda: ["l1"])  # noqa: UP006
    codecs: List[str] = field(default_factory=lambda: ["none", "zlib", "zstd"])  # noqa: UP006
    radios: List[str] = field(default_factory=lambda: ["ble4", "ble5", "lte_c4", "wifi"])  # noqa: UP006

    def __post_init__(self) -> None:
        _subset("space.partitions", self.partitions, list(PARTITIONS))
        _subset("space.bits", self.bits, list(range(1, 9)))
        for name in ("cut_keep", "layer_keep"):
            r = getattr(self, name)
            if not (0 < r.low <= r.high <= 1):
                raise ConfigError(f"space.{name}: low={r.low}, high={r.high}: keep ratios must satisfy "
                                  f"0 < low <= high <= 1")
        _subset("space.criteria", self.criteria, list(CRITERIA))
        _subset("space.codecs", self.codecs, [c for c in available("codec") if c in CODECS])
        _subset("space.radios", self.radios, available("radio"))


@dataclass(frozen=True)
class StudyConfig:
    """The Optuna study. ``n_trials`` counts model evaluations (primary trials) over the study's whole life;
    the radio x codec sibling trials come on top. ``th`` is the allowed mAP@0.5 drop of Eq. 4."""

    name: str = "energy_latency"
    n_trials: int = 40
    th: float = 0.05
    sampler: dict[str, Any] = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    seed: int = 0
    timeout_min: float = 0.0
    enqueue_baselines: bool = True
    single_worker: bool = True
    max_duplicates: int = 100
    protocol: str = "search"
    paper_channels: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # noqa: UP006
    paper_ratios: List[float] = field(default_factory=lambda: [0.5, 0.25, 0.1])  # noqa: UP006

    def __post_init__(self) -> None:
        if self.protocol not in ("search", "paper"):
            raise ConfigError(f"study.protocol={self.protocol!r} not in ['search', 'paper']")
        if any(c < 1 for c in self.paper_channels) or not self.paper_channels:
            raise ConfigError(f"study.paper_channels={self.paper_channels} must be channel counts >= 1")
        if any(not 0 < r <= 1 for r in self.paper_ratios):
            raise ConfigError(f"study.paper_ratios={self.paper_ratios} must be keep ratios in (0, 1]")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"study.name={self.name!r} must be a non-empty name without '/', '\\' or spaces")
        if self.n_trials < 1:
            raise ConfigError(f"study.n_trials={self.n_trials} must be >= 1")
        if self.th < 0:
            raise ConfigError(f"study.th={self.th} must be >= 0 (the allowed mAP@0.5 drop)")
        if "_target_" not in self.sampler:
            raise ConfigError("study.sampler needs a _target_ (e.g. optuna.samplers.TPESampler)")


@dataclass(frozen=True)
class DataConfig:
    """``kind``: synthetic (embedded default), yolo (``data_yaml``) or coco (``train_json``/``val_json`` with
    ``train_images``/``val_images``). Synthetic fields are ignored for real data."""

    kind: str = "synthetic"
    size: int = 160
    n_train: int = 2000
    n_val: int = 400
    seed: int = 0
    data_yaml: Optional[str] = None  # noqa: UP045
    train_json: Optional[str] = None  # noqa: UP045
    val_json: Optional[str] = None  # noqa: UP045
    train_images: Optional[str] = None  # noqa: UP045
    val_images: Optional[str] = None  # noqa: UP045

    def __post_init__(self) -> None:
        if self.kind not in ("synthetic", "yolo", "coco"):
            raise ConfigError(f"data.kind={self.kind!r} not in ['synthetic', 'yolo', 'coco']")
        if self.size < 32 or self.size % 32:
            raise ConfigError(f"data.size={self.size} must be a positive multiple of 32")
        if self.kind == "yolo" and not self.data_yaml:
            raise ConfigError("data.data_yaml is missing: data=yolo needs the path of a data.yaml")
        if self.kind == "yolo" and not os.path.isfile(self.data_yaml):
            raise ConfigError(f"data.data_yaml={self.data_yaml!r}: file not found")
        if self.kind == "coco":
            for k in ("train_json", "val_json", "train_images", "val_images"):
                if not getattr(self, k):
                    raise ConfigError(f"data.{k} is missing: data=coco needs train/val JSON and image folders")
                if not os.path.exists(getattr(self, k)):
                    raise ConfigError(f"data.{k}={getattr(self, k)!r}: not found")


@dataclass(frozen=True)
class ModelConfig:
    width: float = 1.0
    kmeans_anchors: bool = True
    recon: str = "centroid"
    range_percentile: float = 99.9

    def __post_init__(self) -> None:
        if not 0 < self.range_percentile <= 100:
            raise ConfigError(f"model.range_percentile={self.range_percentile} must be in (0, 100]")
        if not 0 < self.width <= 4:
            raise ConfigError(f"model.width={self.width} must be in (0, 4]")
        if self.recon not in ("paper", "midpoint", "centroid"):
            raise ConfigError(f"model.recon={self.recon!r} not in ['paper', 'midpoint', 'centroid']")


@dataclass(frozen=True)
class EvalConfig:
    """mAP settings (the paper reports mAP@0.5 at confidence 0.45; COCO's convention is 0.001)."""

    conf_threshold: float = 0.001
    nms_iou: float = 0.5
    payload_conf_threshold: float = 0.25
    calib_images: int = 256
    payload_images: int = 100
    before_finetune: bool = False

    def __post_init__(self) -> None:
        for k in ("conf_threshold", "nms_iou", "payload_conf_threshold"):
            if not 0 <= getattr(self, k) < 1:
                raise ConfigError(f"eval.{k}={getattr(self, k)} must be in [0, 1)")


@dataclass(frozen=True)
class TrainSection:
    baseline: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0.0, steps=40, lr=1e-4,
                                                                      warmup_epochs=0.0, ema_decay=0.99))
    distill: DistillConfig = field(default_factory=DistillConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    finetune_enabled: bool = True


@dataclass(frozen=True)
class StorageConfig:
    """``kind``: sqlite (``studies/<study>.db``), journal (``studies/<study>.log``) or postgres (``url`` or the
    environment variable named by ``url_env``)."""

    kind: str = "sqlite"
    url: Optional[str] = None  # noqa: UP045
    url_env: str = "SPLITCNN_POSTGRES_URL"

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "journal", "postgres"):
            raise ConfigError(f"storage.kind={self.kind!r} not in ['sqlite', 'journal', 'postgres']")


@dataclass(frozen=True)
class PlatformConfig:
    node: Any = None
    edge: Any = None


@dataclass(frozen=True)
class RunConfig:
    study: StudyConfig
    space: SpaceConfig
    data: DataConfig
    model: ModelConfig
    train: TrainSection
    eval: EvalConfig
    storage: StorageConfig
    platform: PlatformConfig
    mode: str = "optimize"
    device: str = "auto"
    studies_dir: str = "studies"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("optimize", "export", "report"):
            raise ConfigError(f"mode={self.mode!r} not in ['optimize', 'export', 'report']")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r} not in ['auto', 'cpu', 'cuda', 'cuda:N']")


_SECTIONS = {"study": StudyConfig, "space": SpaceConfig, "data": DataConfig, "model": ModelConfig,
             "eval": EvalConfig, "storage": StorageConfig}


def load_run_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Validate the composed config and build the :class:`RunConfig`."""
    try:
        d = (OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig)
             else dict(cfg))
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} is missing: set it on the command line ({e.full_key}=...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '')}: {' '.join(str(e).splitlines()[0].split())}") from None
    d.pop("hydra", None)
    known = {"study", "space", "data", "model", "train", "eval", "storage", "platform", "mode", "device",
             "studies_dir", "progress"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; expected one of {sorted(known)}")
    parts: dict[str, Any] = {}
    for key, schema in _SECTIONS.items():
        try:
            parts[key] = _build(schema, d.get(key) or {}, key)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    tr = d.get("train") or {}
    unknown = sorted(set(tr) - {"baseline", "finetune", "distill", "adapt", "finetune_enabled"})
    if unknown:
        raise ConfigError(f"train.{unknown[0]}: unknown key; expected baseline, finetune, distill, adapt, "
                          "finetune_enabled")
    train = TrainSection(
        baseline=_train(tr.get("baseline") or {}, "train.baseline", TrainConfig()),
        finetune=_train(tr.get("finetune") or {}, "train.finetune", TrainSection().finetune),
        distill=_build(DistillConfig, tr.get("distill") or {}, "train.distill"),
        adapt=_build(AdaptConfig, tr.get("adapt") or {}, "train.adapt"),
        finetune_enabled=bool(tr.get("finetune_enabled", True)),
    )
    plat = d.get("platform") or {}
    node = plat.get("node") or "cortex_m7"
    edge = plat.get("edge") or "rtx3090"
    platform = PlatformConfig(
        node=profile_from_dict("node", node, "platform.node") if isinstance(node, dict) else _named("node", node),
        edge=profile_from_dict("edge", edge, "platform.edge") if isinstance(edge, dict) else _named("edge", edge),
    )
    rest = {k: d[k] for k in ("mode", "device", "studies_dir", "progress") if k in d}
    return RunConfig(train=train, platform=platform, **parts, **rest)


def _named(kind: str, name: str) -> Any:
    from search.profiles import load_profile

    return load_profile(kind, str(name))


def _train(d: dict[str, Any], key: str, defaults: TrainConfig) -> TrainConfig:
    """A TrainConfig from ``defaults`` overridden by ``d``, checked by the same builder as every section."""
    if "scale" in d:
        raise ConfigError(f"{key}.scale: unknown key (did you mean {key}.augment.scale?)")
    base = {f: getattr(defaults, f) for f in defaults.__dataclass_fields__ if f != "augment"}
    try:
        return _build(TrainConfig, {**base, **d}, key)
    except ConfigError as e:  # TrainConfig names its fields train.*: name the section they came from
        raise ConfigError(str(e).replace(f"{key}: train.", f"{key}.")) from None
