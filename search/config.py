"""The run configuration: frozen dataclasses built from the composed Hydra config, checked field by field.

``conf/`` is the one source of default values: these dataclasses have none, so a key the YAML lacks is an error
naming it. ``load_run_config(cfg)`` turns the DictConfig into :class:`RunConfig` (plain values from here on);
any unknown key, wrong type or out-of-range value raises :class:`ConfigError` with one line naming the key and
what is allowed - before anything trains. ``compose([...overrides])`` does the same from Python (tests,
notebooks, benchmarks).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional  # noqa: UP035 - typing generics for the builder

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from models.darknet_cfg import DarknetError
from models.split import cut_points
from objectives.baseline import detector_config
from objectives.settings import EvalConfig, ModelConfig, TrainSettings
from search.profiles import CONF_DIR, ConfigError, _build, available, load_profile, profile_from_dict
from search.sections import (  # noqa: F401 - re-exported: the sections are part of the run configuration's API
    FIDELITIES,
    DataConfig,
    DeployConfig,
    ExportConfig,
    FinalizeConfig,
    QualityRange,
    Range,
    SpaceConfig,
    StorageConfig,
    StudyConfig,
    _subset,
)

MODES = ("optimize", "export", "report", "deploy", "finalize")


@dataclass(frozen=True)
class PlatformConfig:
    node: Any
    edge: Any


@dataclass(frozen=True)
class RunConfig:
    study: StudyConfig
    space: SpaceConfig
    data: DataConfig
    model: ModelConfig
    train: TrainSettings
    eval: EvalConfig
    storage: StorageConfig
    deploy: DeployConfig
    finalize: FinalizeConfig
    export: ExportConfig
    platform: PlatformConfig
    mode: str
    workers: int
    device: str
    studies_dir: str
    progress: bool
    table: Optional[str]  # noqa: UP045 - a design table CSV (objectives.table): answer points from it

    def __post_init__(self) -> None:
        if self.table is not None and (self.mode in ("finalize", "deploy") or self.study.finalize):
            raise ConfigError(f"table={self.table!r} answers points from measured numbers and keeps no weights: "
                              f"mode={self.mode} / study.finalize={self.study.finalize} need a study that trained them")
        if self.table is not None and self.space.bottleneck.latent:
            raise ConfigError(f"table={self.table!r} holds no learned bottlenecks: set space.bottleneck.latent=[] or "
                              f"drop table=")
        if self.table is not None and not os.path.isfile(self.table):
            raise ConfigError(f"table={self.table!r}: file not found (a design table CSV, made by "
                              f"benchmarks/build_table.py)")
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers} must be >= 1")
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} not in {list(MODES)}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device={self.device!r} not in ['auto', 'cpu', 'cuda', 'cuda:N']")


_SECTIONS = {"study": StudyConfig, "space": SpaceConfig, "data": DataConfig, "model": ModelConfig,
             "train": TrainSettings, "eval": EvalConfig, "storage": StorageConfig, "deploy": DeployConfig,
             "finalize": FinalizeConfig, "export": ExportConfig}
_SCALARS = {"mode": str, "workers": int, "device": str, "studies_dir": str, "progress": bool,
            "table": Optional[str]}  # noqa: UP045


def load_run_config(cfg: DictConfig | dict[str, Any], conf_dir: Path = CONF_DIR) -> RunConfig:
    """Validate the composed config and build the :class:`RunConfig`."""
    try:
        d = (OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig)
             else dict(cfg))
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} is missing: set it on the command line ({e.full_key}=...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{getattr(e, 'full_key', '')}: {' '.join(str(e).splitlines()[0].split())}") from None
    d.pop("hydra", None)
    known = {*_SECTIONS, "platform", *_SCALARS}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; expected one of {sorted(known)}")
    missing = sorted(known - set(d))
    if missing:
        raise ConfigError(f"{missing[0]} is missing from the composed config (conf/config.yaml)")
    parts: dict[str, Any] = {key: _build(schema, d[key] or {}, key) for key, schema in _SECTIONS.items()}
    space = parts["space"]
    codecs = available("codec", conf_dir)
    _subset("space.codecs", space.codecs, codecs)
    _subset("space.radios", space.radios, available("radio", conf_dir))
    for name in space.codecs:
        load_profile("codec", name, conf_dir)  # a profile whose algorithm is unknown fails here, naming its file
    plat = d["platform"] or {}
    platform = PlatformConfig(**{kind: profile_from_dict(kind, plat[kind], f"platform.{kind}")
                                 if isinstance(plat.get(kind), dict) else load_profile(kind, str(plat.get(kind)),
                                                                                      conf_dir)
                                 for kind in ("node", "edge")})
    encoders = platform.node.image_encoders or {}
    for fmt in (c for c in space.image_codecs if c != "raw"):
        if fmt not in encoders:
            raise ConfigError(f"space.image_codecs has {fmt!r} but platform.node.image_encoders ({platform.node.name}) "
                              f"names no profile for it: add platform.node.image_encoders.{fmt}=<one of "
                              f"{available('image_codec', conf_dir)}> or drop it from space.image_codecs")
    for fmt, name in encoders.items():
        prof = load_profile("image_codec", str(name), conf_dir)
        if prof.codec != fmt:
            raise ConfigError(f"platform.node.image_encoders.{fmt}={name!r}: that profile codes {prof.codec!r}")
    scalars = {k: _build(tp, d[k], k) for k, tp in _SCALARS.items()}
    parts["space"] = _model_partitions(parts["model"], parts["data"], space, parts["train"].bottleneck.stride)
    return RunConfig(platform=platform, **parts, **scalars)


def _model_partitions(model: ModelConfig, data: DataConfig, space: SpaceConfig, stride: int) -> SpaceConfig:
    """Check the model section against its cfg and resolve ``space.partitions`` against the model's cut-point
    table (None: all of them); where the space has learned bottlenecks, ``stride`` (``train.bottleneck.stride``) must
    divide every searched cut. The table's structure does not depend on the class count."""
    try:
        table = cut_points(detector_config(model, data.size, 1))
    except DarknetError as e:
        raise ConfigError(f"model.cfg={model.cfg!r}: {e}" if not str(e).startswith("model.cfg") else str(e)) from None
    except ValueError as e:
        msg = " ".join(str(e).split())
        key = {"partitions": "model.partition_layers", "input_size": "data.size", "width": "model.width",
               "anchors": "model.cfg"}.get(msg.split("=", 1)[0], "model")
        raise ConfigError(f"{key}: {msg}") from None
    allowed = list(range(len(table)))
    if space.partitions is None:
        space = dataclasses.replace(space, partitions=allowed)
    _subset("space.partitions", space.partitions, allowed)
    for p in (table[j] for j in space.partitions if space.bottleneck.latent and table[j].is_split):
        if p.height % stride or p.width % stride:
            raise ConfigError(f"train.bottleneck.stride={stride} does not divide the {p.height}x{p.width} cut at "
                              f"j={p.j}: choose a stride that divides every cut of space.partitions or leave j={p.j} "
                              "out")
    return space


def compose(overrides: list[str] | tuple[str, ...] = (), config_dir: Path | None = None) -> RunConfig:
    """Compose ``conf/`` with command-line style overrides and validate it (for tests, notebooks, benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf = (config_dir or CONF_DIR).resolve()
    with initialize_config_dir(str(conf), version_base=None):
        cfg = hydra_compose("config", overrides=list(overrides))
    return load_run_config(cfg, conf)
