"""The data of a run: the embedded synthetic set (generated and cached) or a user's YOLO / COCO set."""

from __future__ import annotations

from pathlib import Path

from objectives.data.images import ImageSet
from objectives.data.real import load_coco, load_yolo
from objectives.data.synthetic import SyntheticConfig, cached
from search.config import DataConfig


def load_data(d: DataConfig, cache_dir: Path) -> tuple[ImageSet, ImageSet, str]:
    """(train, val, key): ``key`` identifies the data for the baseline cache and the study's settings guard."""
    if d.kind == "synthetic":
        sc = SyntheticConfig(size=d.size, n_train=d.n_train, n_val=d.n_val, seed=d.seed)
        train, val = cached(sc, cache_dir)
        return train, val, sc.key()
    if d.kind == "yolo":
        train, _ = load_yolo(Path(d.data_yaml), "train", d.size)
        val, _ = load_yolo(Path(d.data_yaml), "val", d.size)
        return train, val, f"yolo:{Path(d.data_yaml).resolve()}:{d.size}"
    train, _ = load_coco(Path(d.train_json), Path(d.train_images), d.size)
    val, _ = load_coco(Path(d.val_json), Path(d.val_images), d.size)
    return train, val, f"coco:{Path(d.train_json).resolve()}:{d.size}"
