"""A data set in memory: images and their boxes, the one type every loader returns and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageSet:
    """Images (N, H, W, 3) uint8 and per-image boxes (m, 5): class, cx, cy, w, h normalized to [0, 1]."""

    images: np.ndarray
    labels: list[np.ndarray]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, start: int, stop: int | None = None) -> ImageSet:
        """Images ``start:stop`` with their labels (a view of the arrays, no copy)."""
        return type(self)(self.images[start:stop], self.labels[start:stop], self.class_names)


def save(ds: ImageSet, path: Path) -> None:
    """Write ``ds`` as one ``.npz`` (images, boxes, offsets, class names), atomically."""
    offsets = np.cumsum([0] + [len(lab) for lab in ds.labels])
    boxes = np.concatenate(ds.labels) if ds.labels else np.zeros((0, 5), np.float32)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=ds.images, boxes=boxes, offsets=offsets, class_names=np.array(ds.class_names))
    tmp.replace(path)


def load(path: Path) -> ImageSet:
    """Read a set :func:`save` wrote (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        offsets = z["offsets"]
        boxes = z["boxes"]
        labels = [boxes[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        return ImageSet(z["images"], labels, tuple(str(c) for c in z["class_names"]))
