"""The workbench: what every mode (optimize, finalize, deploy, the design table) and every benchmark script builds
from the run configuration - the device, the data, the baseline, the cut-point table, the settings the results
depend on, and how a model is measured and priced. Each is built once, on first use, so a mode that needs only
the settings (export, report) loads no data and trains nothing.

    wb = Workbench(rc)                   # nothing loaded yet
    wb.train, wb.val                     # the data (generated and cached, or the user's)
    wb.baseline, wb.model_name           # the user's weights, or the detector trained here (cached)
    settings, pricing = wb.measuring(base_map, wb.rc.train)
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from pathlib import Path

import torch

from models import DarknetError, DetectorConfig, cut_points
from models.cut_points import CutTable
from objectives.baseline import (
    BaselineResult,
    WeightsError,
    detector_config,
    load_baseline,
    train_baseline,
    weights_digest,
)
from objectives.costs import ImageCodecProfile, ProcessorProfile
from objectives.data.images import ImageSet
from objectives.device import resolve_device
from objectives.objective import EvalSettings
from objectives.settings import TrainSettings
from search.config import RunConfig
from search.data import load_data
from search.objective import Pricing
from search.profiles import ConfigError, load_profile
from search.settings import search_settings


def model_config(rc: RunConfig, num_classes: int) -> DetectorConfig:
    return detector_config(rc.model, rc.data.size, num_classes)


def image_encoders(node: ProcessorProfile) -> dict[str, ImageCodecProfile]:
    """Image format -> the image-codec profile the node encodes it with (``platform.node.image_encoders``)."""
    return {fmt: load_profile("image_codec", name) for fmt, name in (node.image_encoders or {}).items()}


def measuring(rc: RunConfig, base_map: float, train: TrainSettings, radios: set[str] = frozenset(),
              codecs: set[str] = frozenset()) -> tuple[EvalSettings, Pricing]:
    """How a run measures a model (``train``'s fine-tuning, payloads for every codec algorithm) and prices it: the
    space's radios and codecs, and ``radios``/``codecs`` besides (a study's trials may name ones the space has
    dropped since)."""
    profiles = {n: load_profile("codec", n) for n in [*rc.space.codecs, *sorted(set(codecs) - set(rc.space.codecs))]}
    algorithms = tuple(dict.fromkeys(p.codec for p in profiles.values()))
    settings = EvalSettings(rc.eval, rc.model, train, algorithms, rc.platform.edge.measured, rc.progress,
                            required_map50=base_map - rc.study.th)
    radio_names = [*rc.space.radios, *sorted(set(radios) - set(rc.space.radios))]
    return settings, Pricing(rc.platform.node, rc.platform.edge, {n: load_profile("radio", n) for n in radio_names},
                             profiles, rc.study.th, base_map, image_encoders(rc.platform.node))


def final_training(train: TrainSettings) -> TrainSettings:
    """``mode=finalize``'s settings: the ``train.final`` budget in place of the search's (and a learned
    bottleneck's ``final_steps`` in place of its ``steps``), and every model trained
    (a front model the search kept un-fine-tuned, ``train.finetune_when=needed``, is trained too)."""
    return dataclasses.replace(train, finetune=train.final, finetune_when="always",
                               bottleneck=dataclasses.replace(train.bottleneck, steps=train.bottleneck.final_steps))


class Workbench:
    """The run configuration's device, data, baseline, cut table, settings and pricing, each built on first use.

    Args:
        rc: the validated run configuration.
        device: where models train and run (default: ``rc.device``, resolved: CUDA when present with ``auto``).
    """

    def __init__(self, rc: RunConfig, device: torch.device | str | None = None) -> None:
        self.rc = rc
        self.device = resolve_device(rc.device if device is None else str(device))
        self.studies = Path(rc.studies_dir)
        self.cache_dir = self.studies / "cache"
        self.export_dir = self.studies / rc.study.name

    @cached_property
    def _data(self) -> tuple[ImageSet, ImageSet, str]:
        return load_data(self.rc.data, self.cache_dir)

    @property
    def train(self) -> ImageSet:
        return self._data[0]

    @property
    def val(self) -> ImageSet:
        return self._data[1]

    @property
    def data_key(self) -> str:
        return self._data[2]

    @cached_property
    def _baseline(self) -> tuple[BaselineResult, str]:
        """(the baseline, its name): the user's weights as they are (``model.weights``), or the detector trained here
        (cached)."""
        rc = self.rc
        mcfg = model_config(rc, len(self.train.class_names))
        if rc.model.weights:
            try:
                base = load_baseline(mcfg, rc.model.weights, self.train.class_names)
            except (WeightsError, DarknetError) as e:
                raise ConfigError(str(e)) from None
            return base, f"{mcfg.name}.cfg + {base.path.name} (sha256 {weights_digest(base.path)})"
        base = train_baseline(mcfg, self.train, self.data_key, rc.train.baseline, self.cache_dir, self.device,
                              kmeans=rc.model.kmeans_anchors, progress=rc.progress)
        return base, f"{mcfg.name}.cfg trained here ({base.path.name})"

    @property
    def baseline(self) -> BaselineResult:
        return self._baseline[0]

    @property
    def model_name(self) -> str:
        return self._baseline[1]

    @property
    def how(self) -> str:
        """Where the baseline came from, for the run's first line."""
        b = self.baseline
        return "given weights, measured" if self.rc.model.weights else "cached" if b.cached else \
            f"trained in {b.seconds:.0f} s"

    @cached_property
    def cut(self) -> CutTable:
        """The baseline's cut-point table (its MACs count the data's classes)."""
        return cut_points(self.baseline.model.cfg)

    @cached_property
    def layout(self) -> CutTable:
        """The model's cut-point table at one class: its structure (layer numbers, parameter names, accuracy keys)
        does not depend on the class count, so it needs no data and no baseline."""
        return cut_points(model_config(self.rc, num_classes=1))

    def settings(self, model_name: str | None = None) -> str:
        """What a search-time accuracy result depends on (:func:`search.settings.search_settings`)."""
        return search_settings(self.rc, self.model_name if model_name is None else model_name)

    def measuring(self, base_map: float, train: TrainSettings | None = None, radios: set[str] = frozenset(),
                  codecs: set[str] = frozenset()) -> tuple[EvalSettings, Pricing]:
        return measuring(self.rc, base_map, self.rc.train if train is None else train, radios, codecs)
