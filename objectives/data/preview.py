"""`python -m objectives.data.preview`: a grid of synthetic samples with their boxes, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from objectives.data.images import ImageSet
from objectives.data.synthetic import SyntheticConfig, generate


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m objectives.data.preview", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("studies/samples.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["train", "val"], default="val")
    args = ap.parse_args(argv)
    cfg = SyntheticConfig(n_train=24, n_val=24, seed=args.seed)
    ds = generate(cfg, args.split, workers=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid(ds).save(args.out)
    print(f"{args.out}: 24 {args.split} images, {sum(len(b) for b in ds.labels)} labelled feet")


if __name__ == "__main__":
    main()
