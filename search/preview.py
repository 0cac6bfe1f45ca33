"""`python -m search.preview`: a grid of synthetic samples of the default data section with their boxes, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from objectives.data.preview import grid
from objectives.data.synthetic import SyntheticConfig, generate
from search.config import compose


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m search.preview", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("studies/samples.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=["train", "val"], default="val")
    args = ap.parse_args(argv)
    d = compose().data  # the default data section: the images the main job trains on, 24 of them
    cfg = SyntheticConfig(size=d.size, n_train=24, n_val=24, seed=args.seed)
    ds = generate(cfg, args.split, workers=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid(ds).save(args.out)
    print(f"{args.out}: 24 {args.split} images, {sum(len(b) for b in ds.labels)} labelled feet")


if __name__ == "__main__":
    main()
