"""A data set in memory: images and their boxes, the one type every loader returns and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass

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
