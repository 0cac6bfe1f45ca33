"""Embedded default dataset: synthetic feet seen from a camera low on a powered wheelchair.

Deterministic from a seed. Each image is a floor (tiles, planks, carpet or plain, random colours) under a
lighting gradient, with 0-4 feet (shoes with a sole rim, laces and a leg/trouser stub, often in pairs)
of varied size, orientation and colour, distractor objects that are not feet (balls, boxes, bottles,
cables, wheels), partial occlusion by the border and by distractors, sensor noise and blur.

Labelling rule: a foot is labelled when at least ``min_visible`` of its shoe is visible; placements that
would leave a foot between 1 % and ``min_visible`` visible are re-drawn, so no half-hidden foot is left
unlabelled (an unlearnable ambiguity). The box is the tight box of the visible part.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from objectives.data.images import ImageSet, load, save  # noqa: F401 - re-exported: the set type and its files

SS = 2  # supersampling factor for anti-aliased drawing


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator settings. Sizes in pixels of the final image. ``size``, ``n_train``, ``n_val`` and ``seed`` are the
    ``data`` section's (conf/data/synthetic.yaml holds their defaults); the rest are the generator's own constants."""

    size: int
    n_train: int
    n_val: int
    seed: int
    max_feet: int = 4
    min_foot: float = 20.0
    max_foot: float = 64.0
    min_visible: float = 0.6
    max_distractors: int = 3
    pair_prob: float = 0.6
    empty_prob: float = 0.08

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 32:
            raise ValueError(f"data.size={self.size} must be a positive multiple of 32")
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError(f"data.n_train={self.n_train} and data.n_val={self.n_val} must be >= 1")
        if not 0 < self.min_visible <= 1:
            raise ValueError(f"data.min_visible={self.min_visible} must be in (0, 1]")
        if not 4 <= self.min_foot <= self.max_foot:
            raise ValueError(f"data.min_foot={self.min_foot} must be in [4, max_foot={self.max_foot}]")

    def key(self) -> str:
        blob = json.dumps({"generator": 1, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ drawing helpers


def _hsv(rng: np.random.Generator, h=(0, 1), s=(0, 1), v=(0, 1)) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))
    return int(r * 255), int(g * 255), int(b * 255)


def _floor(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n, 3) float floor texture in [0, 255]."""
    base = np.array(_hsv(rng, s=(0.05, 0.5), v=(0.35, 0.9)), dtype=np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    shade = np.ones((n, n), np.float32)
    if kind == 0:  # tiles with grout lines
        t = rng.uniform(30, 90) * SS
        ang = rng.uniform(-0.3, 0.3)
        u, v = xx * math.cos(ang) + yy * math.sin(ang), -xx * math.sin(ang) + yy * math.cos(ang)
        grout = (np.mod(u, t) < 2.5 * SS) | (np.mod(v, t) < 2.5 * SS)
        tile_id = np.floor(u / t) * 7 + np.floor(v / t) * 13
        shade = 1 + 0.06 * np.sin(tile_id)
        shade[grout] = rng.uniform(0.55, 0.8)
    elif kind == 1:  # planks
        w = rng.uniform(18, 45) * SS
        pid = np.floor(yy / w)
        shade = 1 + 0.1 * np.sin(pid * 2.3) + 0.04 * np.sin(xx / rng.uniform(3, 9) + pid * 5)
        shade[np.mod(yy, w) < 1.5 * SS] = 0.7
    elif kind == 2:  # carpet: low-frequency noise
        g = rng.normal(0, 1, (9, 9)).astype(np.float32)
        low = np.asarray(Image.fromarray(g).resize((n, n), Image.BICUBIC))
        shade = 1 + 0.12 * low / (np.abs(low).max() + 1e-6)
    img = base[None, None, :] * shade[..., None]
    img += rng.normal(0, rng.uniform(2, 10), (n, n, 1)).astype(np.float32)  # texture grain
    return img


def _rot(points: np.ndarray, ang: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(ang), math.sin(ang)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _shoe_outline(length: float, width: float, k: int = 28) -> np.ndarray:
    """Shoe footprint along +x (toe at +x): a wider rounded toe and a narrower heel."""
    t = np.linspace(0, 2 * math.pi, k, endpoint=False)
    x = 0.5 * length * np.cos(t)
    taper = 0.78 + 0.22 * (np.cos(t) + 1) / 2  # wider at the toe
    y = 0.5 * width * np.sin(t) * taper
    return np.stack([x, y], 1)


@dataclass
class _Foot:
    cx: float
    cy: float
    length: float
    width: float
    ang: float
    color: tuple[int, int, int]
    trouser: tuple[int, int, int]
    has_leg: bool


def _draw_foot(draw: ImageDraw.ImageDraw, mask_draw: ImageDraw.ImageDraw | None, f: _Foot,
               rng: np.random.Generator) -> None:
    if f.has_leg:  # trouser stub from the heel, away from the toe
        back = f.ang + math.pi + rng.uniform(-0.3, 0.3)
        lw = f.width * 0.9
        L = f.length * rng.uniform(0.6, 1.2)
        hx, hy = f.cx - 0.3 * f.length * math.cos(f.ang), f.cy - 0.3 * f.length * math.sin(f.ang)
        pts = np.array([[0, -lw / 2], [L, -lw / 2], [L, lw / 2], [0, lw / 2]])
        draw.polygon(_rot(pts, back, hx, hy), fill=f.trouser)
    outline = _shoe_outline(f.length, f.width)
    poly = _rot(outline, f.ang, f.cx, f.cy)
    sole = tuple(int(c * 0.45) if sum(f.color) > 300 else min(255, int(c * 0.5 + 120)) for c in f.color)
    draw.polygon(poly, fill=sole)
    inner = _rot(outline * np.array([0.9, 0.82]), f.ang, f.cx - 0.02 * f.length * math.cos(f.ang),
                 f.cy - 0.02 * f.length * math.sin(f.ang))
    draw.polygon(inner, fill=f.color)
    # laces / tongue: a few strokes across the front half
    lace = tuple(255 - c for c in f.color) if rng.random() < 0.5 else sole
    for k in range(3):
        x = 0.05 * f.length + k * 0.08 * f.length
        seg = np.array([[x, -0.18 * f.width], [x, 0.18 * f.width]])
        draw.line(_rot(seg, f.ang, f.cx, f.cy), fill=lace, width=max(1, int(f.width * 0.07)))
    if mask_draw is not None:
        mask_draw.polygon(poly, fill=255)


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: np.random.Generator, n: int) -> None:
    kind = rng.integers(0, 5)
    col = _hsv(rng, s=(0, 1), v=(0.1, 1))
    cx, cy = rng.uniform(0, n, 2)
    r = rng.uniform(6, 30) * SS
    if kind == 0:  # ball
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        draw.ellipse([cx - r * 0.4, cy - r * 0.6, cx, cy - r * 0.2], fill=tuple(min(255, c + 60) for c in col))
    elif kind == 1:  # box
        pts = np.array([[-r, -r * 0.7], [r, -r * 0.7], [r, r * 0.7], [-r, r * 0.7]])
        draw.polygon(_rot(pts, rng.uniform(0, math.pi), cx, cy), fill=col, outline=(20, 20, 20))
    elif kind == 2:  # bottle / can from above: a long rounded rectangle with a cap
        pts = np.array([[-r * 1.3, -r * 0.35], [r * 1.3, -r * 0.35], [r * 1.3, r * 0.35], [-r * 1.3, r * 0.35]])
        ang = rng.uniform(0, math.pi)
        draw.polygon(_rot(pts, ang, cx, cy), fill=col)
        cap = np.array([[r * 1.3, -r * 0.2], [r * 1.7, -r * 0.2], [r * 1.7, r * 0.2], [r * 1.3, r * 0.2]])
        draw.polygon(_rot(cap, ang, cx, cy), fill=_hsv(rng))
    elif kind == 3:  # cable
        pts = [tuple(p) for p in rng.uniform(0, n, (4, 2))]
        draw.line(pts, fill=col, width=int(rng.uniform(2, 5) * SS), joint="curve")
    else:  # wheel / castor: ring
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(30, 30, 30), width=int(r * 0.35))


def _visible_fraction(mask: np.ndarray, full_area: float) -> float:
    return float((mask > 127).sum()) / max(full_area, 1.0)


def _place_feet(rng: np.random.Generator, cfg: SyntheticConfig, n: int) -> list[_Foot]:
    if rng.random() < cfg.empty_prob:
        return []
    target = int(rng.integers(1, cfg.max_feet + 1))
    feet: list[_Foot] = []
    while len(feet) < target:
        length = math.exp(rng.uniform(math.log(cfg.min_foot), math.log(cfg.max_foot))) * SS
        width = length * rng.uniform(0.36, 0.46)
        ang = -math.pi / 2 + rng.normal(0, 0.6) if rng.random() < 0.75 else rng.uniform(0, 2 * math.pi)
        color = _hsv(rng, s=(0, 0.9), v=(0.08, 0.98))
        trouser = _hsv(rng, h=(0.55, 0.7), s=(0.1, 0.7), v=(0.1, 0.6)) if rng.random() < 0.7 else _hsv(rng)
        cx, cy = rng.uniform(0.04 * n, 0.96 * n, 2)
        has_leg = rng.random() < 0.8
        feet.append(_Foot(cx, cy, length, width, ang, color, trouser, has_leg))
        if len(feet) < target and rng.random() < cfg.pair_prob:  # the other foot, beside this one
            side = ang + math.pi / 2 * (1 if rng.random() < 0.5 else -1)
            d = width * rng.uniform(1.2, 1.8)
            ang2 = ang + rng.normal(0, 0.15)
            shift = length * rng.uniform(-0.25, 0.25)
            feet.append(_Foot(cx + d * math.cos(side) + shift * math.cos(ang), cy + d * math.sin(side)
                              + shift * math.sin(ang), length * rng.uniform(0.95, 1.05), width, ang2, color,
                              trouser, has_leg))
    return feet


def render(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 and its boxes (m, 5): class, cx, cy, w, h normalized."""
    n = cfg.size * SS
    for _attempt in range(50):
        img = Image.fromarray(np.clip(_floor(rng, n), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        feet = _place_feet(rng, cfg, n)
        masks: list[Image.Image] = []
        areas: list[float] = []
        for f in feet:  # later feet occlude earlier ones: keep every mask up to date
            m = Image.new("L", (n, n), 0)
            _draw_foot(draw, ImageDraw.Draw(m), f, rng)
            full = Image.new("L", (3 * n, 3 * n), 0)  # area including the part outside the frame
            _draw_foot(ImageDraw.Draw(Image.new("RGB", (3 * n, 3 * n))), ImageDraw.Draw(full),
                       _Foot(f.cx + n, f.cy + n, f.length, f.width, f.ang, f.color, f.trouser, False), rng)
            areas.append(float((np.asarray(full) > 127).sum()))
            cover = np.asarray(m) > 127
            for k, prev in enumerate(masks):
                a = np.asarray(prev).copy()
                a[cover] = 0
                masks[k] = Image.fromarray(a)
            masks.append(m)
        for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
            layer = img.copy()
            occ = Image.new("L", (n, n), 0)
            _draw_distractor(ImageDraw.Draw(layer), rng, n)
            _draw_distractor_mask = np.any(np.asarray(layer) != np.asarray(img), axis=2)
            new_masks = []
            for m in masks:
                a = np.asarray(m).copy()
                a[_draw_distractor_mask] = 0
                new_masks.append(Image.fromarray(a))
            fr = [_visible_fraction(np.asarray(m), ar) for m, ar in zip(new_masks, areas, strict=True)]
            if all(v >= cfg.min_visible or v < 0.01 for v in fr) or not masks:
                img, masks = layer, new_masks  # accept: no foot left ambiguously hidden
            del occ
        fracs = [_visible_fraction(np.asarray(m), ar) for m, ar in zip(masks, areas, strict=True)]
        if any(0.01 <= v < cfg.min_visible for v in fracs):
            continue  # a foot ambiguously cut by the border or another foot: draw the scene again
        break
    boxes = []
    for m, v in zip(masks, fracs, strict=True):
        if v < cfg.min_visible:
            continue
        ys, xs = np.nonzero(np.asarray(m) > 127)
        x1, x2 = xs.min() / SS, (xs.max() + 1) / SS
        y1, y2 = ys.min() / SS, (ys.max() + 1) / SS
        s = cfg.size
        boxes.append([0, (x1 + x2) / 2 / s, (y1 + y2) / 2 / s, (x2 - x1) / s, (y2 - y1) / s])
    # lighting gradient, downsample, blur, noise
    arr = np.asarray(img).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    a = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.55, 0.9) + rng.uniform(0.1, 0.5) * ((xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) + 0.5)
    arr = np.clip(arr * light[..., None], 0, 255).astype(np.uint8)
    out = Image.fromarray(arr).resize((cfg.size, cfg.size), Image.LANCZOS)
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    final = np.asarray(out).astype(np.float32) + rng.normal(0, rng.uniform(0, 8), (cfg.size, cfg.size, 3))
    return np.clip(final, 0, 255).astype(np.uint8), np.array(boxes, dtype=np.float32).reshape(-1, 5)


def _render_range(cfg: SyntheticConfig, split: str, start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n = {"train": cfg.n_train, "val": cfg.n_val}[split]
    children = np.random.SeedSequence([cfg.seed, 0 if split == "train" else 1]).spawn(n)
    return [render(np.random.default_rng(children[i]), cfg) for i in range(start, stop)]


def generate(cfg: SyntheticConfig, split: str, workers: int = 0) -> ImageSet:
    """Generate the ``train`` or ``val`` split. Image i depends only on (seed, split, i), so the result is
    the same for any number of ``workers`` (0 = one per CPU, at most 4)."""
    n = {"train": cfg.n_train, "val": cfg.n_val}[split]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1 or n < 64:
        parts = _render_range(cfg, split, 0, n)
    else:
        bounds = np.linspace(0, n, workers + 1).astype(int)
        # fork where available: rendering is numpy/PIL only, and spawn cannot re-import an interactive __main__
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            futs = [ex.submit(_render_range, cfg, split, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            parts = [r for f in futs for r in f.result()]
    images = np.stack([p[0] for p in parts])
    return ImageSet(images, [p[1] for p in parts], ("foot",))


def cached(cfg: SyntheticConfig, cache_dir: Path) -> tuple[ImageSet, ImageSet]:
    """Train and val splits, generated once and cached under ``cache_dir`` by a hash of the config."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for split in ("train", "val"):
        path = cache_dir / f"synthetic-{cfg.key()}-{split}.npz"
        ds = None
        if path.is_file():
            try:
                ds = load(path)
            except (OSError, ValueError, KeyError):
                ds = None  # corrupt cache: rebuild
        if ds is None or len(ds) != (cfg.n_train if split == "train" else cfg.n_val):
            ds = generate(cfg, split)
            save(ds, path)
        out.append(ds)
    return out[0], out[1]
