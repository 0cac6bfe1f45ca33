"""Settings for tests from the real conf/ tree (the one source of defaults), changed where a test needs it."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from objectives.data.batches import AugmentConfig
from objectives.settings import AdaptConfig, DistillConfig, TrainConfig
from search.config import RunConfig, compose


@lru_cache(maxsize=32)
def _conf(overrides: tuple[str, ...]) -> RunConfig:
    return compose(list(overrides))


def conf(*overrides: str) -> RunConfig:
    """The composed and validated default config with command-line style overrides."""
    return _conf(tuple(overrides))


def train_cfg(section: str = "finetune", **changes) -> TrainConfig:
    """``train.<section>`` of the default config with ``changes``."""
    return replace(getattr(conf().train, section), **changes)


def augment(**changes) -> AugmentConfig:
    return replace(conf().train.baseline.augment, **changes)


def adapt(**changes) -> AdaptConfig:
    return replace(conf().train.adapt, **changes)


def distill(**changes) -> DistillConfig:
    return replace(conf().train.distill, **changes)


def write_yolo(data, images_dir, labels_dir) -> None:
    """An ImageSet as a user's YOLO folder: PNG images (lossless: the same pixels) and label files."""
    from PIL import Image

    images_dir.mkdir(parents=True)
    labels_dir.mkdir(parents=True)
    for k, (img, lab) in enumerate(zip(data.images, data.labels, strict=True)):
        Image.fromarray(img).save(images_dir / f"{k:04d}.png")
        (labels_dir / f"{k:04d}.txt").write_text(
            "".join(f"{int(c)} {x!r} {y!r} {w!r} {h!r}\n" for c, x, y, w, h in lab.tolist()))
