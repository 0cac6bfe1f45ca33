"""A grid of images with their boxes, as a PNG (``python -m search.preview`` draws synthetic samples)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from objectives.data.images import ImageSet


def grid(ds: ImageSet, cols: int = 6, rows: int = 4, scale: int = 2) -> Image.Image:
    """Images with their boxes drawn in red, ``cols`` x ``rows``, each enlarged ``scale`` times."""
    n = min(len(ds), cols * rows)
    h, w = ds.images.shape[1:3]
    out = Image.new("RGB", (cols * w * scale, rows * h * scale), (255, 255, 255))
    for i in range(n):
        im = Image.fromarray(ds.images[i]).resize((w * scale, h * scale), Image.NEAREST)
        d = ImageDraw.Draw(im)
        for _, cx, cy, bw, bh in np.asarray(ds.labels[i]).reshape(-1, 5):
            d.rectangle([(cx - bw / 2) * w * scale, (cy - bh / 2) * h * scale, (cx + bw / 2) * w * scale,
                         (cy + bh / 2) * h * scale], outline=(255, 0, 0), width=scale)
        out.paste(im, ((i % cols) * w * scale, (i // cols) * h * scale))
    return out
