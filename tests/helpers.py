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


def accuracy_result(key: str, j: int, map50: float, payload: dict[str, float], **fields):
    """The one builder of made-up :class:`AccuracyResult` records for tests: ``payload`` is the mean payload bytes per
    codec (the maximum is its ceiling and the best codec the smallest unless ``fields`` say otherwise); every other
    field is neutral (no MACs, no memory, mAP@[.5:.95] half of mAP@0.5) unless given. No number here is a
    measurement."""
    import math

    from objectives.objective import AccuracyResult

    base = {"map50_95": map50 / 2, "map50_before_finetune": math.nan, "node_macs": 0, "edge_macs": 0,
            "node_macs_per_layer": {}, "cut_shape": [0, 0, 0], "feature_values": 0,
            "raw_bytes": math.ceil(max(payload.values())), "payload_max_bytes": {c: math.ceil(v) for c, v in
                                                                                  payload.items()},
            "entropy_bytes": 0.0, "best_codec": min(payload, key=payload.get), "weight_count": 0,
            "peak_activation_values": 0}
    return AccuracyResult(key=key, j=j, map50=map50, payload_mean_bytes=dict(payload), **{**base, **fields})


def fake_result(point, cut, size: int = 64):
    """A made-up but self-consistent :class:`AccuracyResult` for a design point (for design-table tests): mAP
    falls with fewer bits, fewer cut channels and harder step-2 pruning; payload, MACs and memory follow the cut
    tensor. No number here is a measurement."""
    import math

    p = cut[point.j]
    key = point.accuracy_key(cut)
    codecs = ("lzma", "none", "zlib", "zstd")
    if not p.is_split:
        image = point.j == 0
        raw = 3 * size * size if image else 24
        q = point.quality if point.coded_image else 0
        if q:  # a coded image: smaller and less accurate at a lower quality
            raw = math.ceil(3 * size * size * (0.01 + q / 400))
        return accuracy_result(
            key, point.j, (0.9 - (100 - q) / 1000 if q else 0.9) if image else 0.8,
            {c: float(raw) * (1.0 if c == "none" else 0.8) for c in codecs}, map50_95=0.5,
            image_codec=point.image_codec if q else "", quality=q,
            node_macs=0 if image else 100_000_000, edge_macs=100_000_000 if image else 0,
            cut_shape=[3, size, size] if image else [0, 0, 0], raw_bytes=raw,
            payload_max_bytes={c: raw for c in codecs}, entropy_bytes=raw * 0.5, best_codec="zlib",
            weight_count=0 if image else 9_000_000, peak_activation_values=0 if image else 50_000)
    n = cut.conv_channels[p.conv]
    k = cut.kept(p.conv, point.cut_keep)
    shares = [cut.kept(c, r) / cut.conv_channels[c] for c, r in point.layer_keep]  # by channels: a function of the key
    level = sum(shares) / len(shares) if shares else 1.0
    h = size // 2 ** point.j
    mAP = 0.9 - 0.12 * (1 - point.bits / 8) ** 2 - 0.15 * (1 - k / n) / point.j - 0.05 * (1 - level)
    node = int(20_000_000 * point.j * (0.5 + 0.5 * level) * (0.5 + 0.5 * k / n))
    raw = math.ceil(k * h * h * point.bits / 8) + 16
    ratio = {"none": 1.0, "zlib": 0.7, "zstd": 0.65, "lzma": 0.6}
    return accuracy_result(
        key, point.j, mAP, {c: raw * ratio[c] for c in codecs}, map50_before_finetune=mAP - 0.1, node_macs=node,
        edge_macs=100_000_000 - node, node_macs_per_layer={"0": node}, cut_shape=[k, h, h],
        feature_values=k * h * h, raw_bytes=raw,
        payload_max_bytes={c: math.ceil(raw * ratio[c]) + 3 for c in codecs}, entropy_bytes=raw * 0.5,
        weight_count=1000 * point.j, peak_activation_values=4 * k * h * h, finetune_steps=40, seconds=1.0)


def fake_table(path, rc, model: str = "fake-model (tests/helpers.fake_table)", partitions=None, image_codecs=()):
    """Write a design table of :func:`fake_result` rows over the grid of ``rc``'s model, with a provenance line
    that matches ``rc``'s settings (so ``table=path`` is accepted with the same overrides). Returns the cut table."""
    from models import cut_points
    from objectives.table import GRID_BITS, GRID_COUNTS, GRID_LEVELS, grid_points, row_of, write_csv
    from search.settings import digest, search_settings
    from search.workbench import model_config

    cut = cut_points(model_config(rc, 1))
    settings = search_settings(rc, model)
    rows = [row_of(p, fake_result(p, cut, rc.data.size), cut)
            for p in grid_points(cut, partitions=partitions, image_codecs=image_codecs)]
    write_csv(path, {"model": model, "num_classes": 1, "settings": settings,
                     "digest": digest(settings),
                     "grid": {"bits": list(GRID_BITS), "counts_per_cut_conv": GRID_COUNTS,
                              "levels": list(GRID_LEVELS), "criterion": "l1"}}, rows)
    return cut


def readme_entropy_body(codes, m: dict) -> bytes:
    """An ``ans`` / ``ans_ctx`` body built from the bundle README's words and interface.json's ``entropy_model``
    alone (pure Python, not models.entropy or constriction)."""
    import base64
    import struct

    import numpy as np

    c, h, w = codes.shape
    levels = 2 ** m["bits"]
    cum = np.frombuffer(base64.b64decode(m["cum_u16le_base64"]), dtype="<u2").reshape(m["table_shape"])
    term = m["term_of_code"]
    g = m["term_levels"]

    def value(ch, y, x):
        return term[int(codes[ch, y, x])] if 0 <= y < h and 0 <= x < w else 0

    symbols = []  # (start16, freq16) in coding order
    for ch in m["order"]:
        for y, x in sorted(((y, x) for y in range(h) for x in range(w)), key=lambda p: (2 * p[0] + p[1], p[0])):
            ctx, mult = 0, 1
            for side, dy, dx in m["terms"]:
                src = ch if side == "own" else m["parent"][ch]
                ctx += (value(src, y - dy, x - dx) if src >= 0 else 0) * mult
                mult *= g
            row = [int(v) for v in cum[m["group"][ch]][ctx]] + [65536]
            s = int(codes[ch, y, x])
            assert s < levels
            symbols.append((row[s], row[s + 1] - row[s]))
    state, words = 0, []
    for start, f16 in reversed(symbols):
        f, start = f16 * 256, start * 256
        if (state >> 40) >= f:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // f) << 24) | (start + state % f)
    while state:
        words.append(state & 0xFFFFFFFF)
        state >>= 32
    return struct.pack("<I", m["crc32"]) + b"".join(struct.pack("<I", v) for v in words)
