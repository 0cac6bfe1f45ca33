"""The sections of the run configuration (``space``, ``study``, ``data``, ``storage``, ``deploy``, ``finalize``,
``export``): frozen dataclasses without defaults (``conf/`` holds them), each checking its own values and raising
:class:`~search.profiles.ConfigError` with one line naming the key and what is allowed. :mod:`search.config`
assembles them into the :class:`~search.config.RunConfig`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional  # noqa: UP035 - typing generics for the builder

from models.prune import CRITERIA
from search.profiles import ConfigError

FIDELITIES = ("auto", "search", "final")


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
    log: bool


@dataclass(frozen=True)
class QualityRange:
    """The image codecs' quality: an integer from ``low`` to ``high`` in steps of ``step``."""

    low: int
    high: int
    step: int


@dataclass(frozen=True)
class BottleneckSpace:
    """Learned bottlenecks at the cut (:mod:`models.bottleneck`): where a feature map is cut, the search may put one
    of ``latent`` channels in place of the b-bit quantizer, trained with rate weight ``lambdas`` (both part of the
    accuracy key; ``train.bottleneck`` says how it is trained). ``latent: []``: none (the default study)."""

    latent: List[int]  # noqa: UP006
    lambdas: List[float]  # noqa: UP006

    def __post_init__(self) -> None:
        if any(not isinstance(k, int) or k < 1 for k in self.latent) or len(set(self.latent)) != len(self.latent):
            raise ConfigError(f"space.bottleneck.latent={self.latent} must be distinct channel counts >= 1 "
                              f"([] searches none)")
        if self.latent and (not self.lambdas or any(not lam >= 0 for lam in self.lambdas)
                            or len(set(self.lambdas)) != len(self.lambdas)):
            raise ConfigError(f"space.bottleneck.lambdas={self.lambdas} must be distinct rate weights >= 0 "
                              f"(at least one where space.bottleneck.latent is set)")


@dataclass(frozen=True)
class SpaceConfig:
    """The design space. Keep ratios: ``cut_keep`` for the conv that feeds the cut (step 1), ``layer_keep``
    for each earlier node conv (step 2; one ratio for all of them with ``shared_layer_keep``); both are only
    sampled where a feature map is cut. ``codecs`` and ``radios`` name cost profiles (conf/codec/, conf/radio/);
    they are checked against the profiles on disk by :func:`load_run_config`."""

    partitions: Optional[List[int]]  # noqa: UP006, UP045 - None: every cut point of the model
    bits: List[int]  # noqa: UP006
    cut_keep: Range
    layer_keep: Range
    prune_earlier: bool
    shared_layer_keep: bool
    criteria: List[str]  # noqa: UP006
    codecs: List[str]  # noqa: UP006
    radios: List[str]  # noqa: UP006
    image_codecs: List[str]  # noqa: UP006
    image_quality: QualityRange
    image_anchors: List[int]  # noqa: UP006
    bottleneck: BottleneckSpace

    def __post_init__(self) -> None:
        from models.image_codec import IMAGE_CODECS, RAW

        _subset("space.bits", self.bits, list(range(1, 9)))
        _subset("space.image_codecs", self.image_codecs, [RAW, *IMAGE_CODECS])
        q = self.image_quality
        for name, c in IMAGE_CODECS.items():
            lo, hi = c.quality_range
            if name in self.image_codecs and not (lo <= q.low <= q.high <= hi):
                raise ConfigError(f"space.image_quality: low={q.low}, high={q.high} must satisfy "
                                  f"{lo} <= low <= high <= {hi} ({name}'s qualities)")
        if q.step < 1 or (q.high - q.low) % q.step:
            raise ConfigError(f"space.image_quality.step={q.step} must be >= 1 and divide high - low = "
                              f"{q.high - q.low}")
        bad = [a for a in self.image_anchors if a not in range(q.low, q.high + 1, q.step)]
        if bad:
            raise ConfigError(f"space.image_anchors: {bad[0]!r} is not a quality of space.image_quality "
                              f"({q.low}..{q.high} step {q.step})")
        for name in ("cut_keep", "layer_keep"):
            r = getattr(self, name)
            if not (0 < r.low <= r.high <= 1):
                raise ConfigError(f"space.{name}: low={r.low}, high={r.high}: keep ratios must satisfy "
                                  f"0 < low <= high <= 1")
        _subset("space.criteria", self.criteria, list(CRITERIA))


@dataclass(frozen=True)
class StudyConfig:
    """The Optuna study. ``n_trials`` counts model evaluations (primary trials) over the study's whole life;
    the radio x codec sibling trials come on top. ``th`` is the allowed mAP@0.5 drop of Eq. 4."""

    name: str
    n_trials: int
    th: float
    sampler: dict[str, Any]
    seed: int
    timeout_min: float
    enqueue_baselines: bool
    single_worker: bool
    max_duplicates: int
    protocol: str
    paper_channels: List[int]  # noqa: UP006
    paper_ratios: List[float]  # noqa: UP006
    finalize: bool

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
        if self.max_duplicates < 1:
            raise ConfigError(f"study.max_duplicates={self.max_duplicates} must be >= 1")
        if "_target_" not in self.sampler:
            raise ConfigError("study.sampler needs a _target_ (e.g. optuna.samplers.TPESampler)")


@dataclass(frozen=True)
class DataConfig:
    """``kind``: synthetic (embedded default), yolo (``data_yaml``) or coco (``train_json``/``val_json`` with
    ``train_images``/``val_images``). Synthetic fields are ignored for real data; paths are absent (None) unless
    the data kind needs them."""

    kind: str
    size: int
    n_train: Optional[int] = None  # noqa: UP045
    n_val: Optional[int] = None  # noqa: UP045
    seed: Optional[int] = None  # noqa: UP045
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
        for k in ("n_train", "n_val", "seed"):
            if self.kind == "synthetic" and getattr(self, k) is None:
                raise ConfigError(f"data.{k} is missing: data=synthetic needs n_train, n_val and seed")
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
class StorageConfig:
    """``kind``: sqlite (``studies/<study>.db``), journal (``studies/<study>.log``) or postgres (``url`` or the
    environment variable named by ``url_env``). ``heartbeat_interval`` (seconds, 0 = off) and ``grace_period``
    make a worker that died mid-trial detectable: its trial is failed and queued again by a live worker.
    ``claim_delay_s``: see :mod:`search.claims`; ``retry_minutes``: how long a worker retries an unreachable
    storage before it exits."""

    kind: str
    url: Optional[str]  # noqa: UP045
    url_env: str
    heartbeat_interval: int
    grace_period: int
    claim_delay_s: float
    retry_minutes: float

    def __post_init__(self) -> None:
        if self.kind not in ("sqlite", "journal", "postgres"):
            raise ConfigError(f"storage.kind={self.kind!r} not in ['sqlite', 'journal', 'postgres']")
        if self.heartbeat_interval < 0:
            raise ConfigError(f"storage.heartbeat_interval={self.heartbeat_interval} must be >= 0 (0: off)")
        if self.claim_delay_s < 0 or self.retry_minutes < 0:
            raise ConfigError(f"storage.claim_delay_s={self.claim_delay_s} and storage.retry_minutes="
                              f"{self.retry_minutes} must be >= 0")
        if self.heartbeat_interval and self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"storage.grace_period={self.grace_period} must exceed storage.heartbeat_interval="
                              f"{self.heartbeat_interval}")


@dataclass(frozen=True)
class DeployConfig:
    """``mode=deploy``: ``trial`` = the trial number to deploy (None: the lowest-energy feasible Pareto point);
    ``max_frame_bytes``: the largest request frame the edge server accepts; ``idle_timeout_s``: how long it keeps a
    connection that sends nothing; ``max_clients``: how many connections it serves at once (all three written into
    the bundle)."""

    trial: Optional[int]  # noqa: UP045
    max_frame_bytes: int
    idle_timeout_s: float
    max_clients: int

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ConfigError(f"deploy.max_frame_bytes={self.max_frame_bytes} must be >= 1024")
        if not self.idle_timeout_s > 0:
            raise ConfigError(f"deploy.idle_timeout_s={self.idle_timeout_s} must be > 0 (seconds)")
        if self.max_clients < 1:
            raise ConfigError(f"deploy.max_clients={self.max_clients} must be >= 1")


@dataclass(frozen=True)
class FinalizeConfig:
    """``mode=finalize`` (or ``study.finalize=true``): which points get the final training (``train.final``).

    Every model on the feasible Pareto front, and every model whose search-time mAP@0.5 lies less than ``margin``
    below the threshold (baseline - ``study.th``), at most ``max_points`` models, nearest the front first."""

    margin: float
    max_points: int

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 1:
            raise ConfigError(f"finalize.margin={self.margin} must be an mAP@0.5 distance in [0, 1]")
        if self.max_points < 1:
            raise ConfigError(f"finalize.max_points={self.max_points} must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """``fidelity``: whose numbers the Pareto front is built from - ``search`` (every trial's search-time numbers),
    ``final`` (the final training's where a point has them, search-time elsewhere) or ``auto`` (final once the
    study has been finalized)."""

    fidelity: str

    def __post_init__(self) -> None:
        if self.fidelity not in FIDELITIES:
            raise ConfigError(f"export.fidelity={self.fidelity!r} not in {list(FIDELITIES)}")
