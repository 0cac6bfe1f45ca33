"""Fitting the entropy models of :mod:`models.entropy` on calibration codes: the Chow-Liu channel tree, the
equal-mass term tables for b > 2, channel groups within the table budget and the 16-bit frequency tables."""

from __future__ import annotations

import numpy as np

from models.entropy import (
    CHOW_LIU_SAMPLES,
    FIT_VALUES,
    MAX_TABLE_BYTES,
    SMOOTHING,
    TABLE_BITS,
    EntropyError,
    EntropyModel,
    contexts,
    identity_lut,
    template,
)


def equal_mass_lut(codes: np.ndarray, bits: int, levels: int = 4) -> np.ndarray:
    """Code -> term value for b > 2: ``levels`` buckets of (about) equal mass over the calibration codes, monotone in
    the code (the boundaries are the codes where the cumulative share passes 1/4, 2/4, 3/4)."""
    hist = np.bincount(np.asarray(codes).ravel().astype(np.int64), minlength=2 ** bits).astype(np.float64)
    share = np.cumsum(hist) / max(hist.sum(), 1)
    bounds = np.searchsorted(share, np.arange(1, levels) / levels, side="left") + 1
    return np.searchsorted(bounds, np.arange(2 ** bits), side="right").astype(np.uint8)


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def chow_liu(codes: np.ndarray, lut: np.ndarray, samples: int = CHOW_LIU_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """(order, parent) of the channels of ``codes`` (N, C, H, W): the maximum spanning tree of their pairwise mutual
    information (of the bucketed codes at one position), rooted at the channel of highest entropy; ``order`` is
    Prim's insertion order, so a parent always comes first."""
    n, c = codes.shape[:2]
    g = int(lut.max()) + 1
    x = lut.astype(np.int64)[codes.astype(np.int64)].transpose(1, 0, 2, 3).reshape(c, -1)
    x = x[:, :: max(1, x.shape[1] // samples)]
    onehot = np.zeros((x.shape[1], c * g), dtype=np.float32)
    onehot[np.arange(x.shape[1])[:, None], np.arange(c)[None] * g + x.T] = 1
    joint = (onehot.T @ onehot).reshape(c, g, c, g).transpose(0, 2, 1, 3).astype(np.float64) / x.shape[1]
    marg = joint[np.arange(c), np.arange(c)].diagonal(axis1=-2, axis2=-1)  # (c, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = joint / (marg[:, None, :, None] * marg[None, :, None, :])
        mi = np.where(joint > 0, joint * np.log2(np.where(joint > 0, ratio, 1)), 0).sum((2, 3))
    np.fill_diagonal(mi, -np.inf)
    h = np.array([_entropy_bits(m) for m in marg])
    root = int(np.argmax(h))
    order, parent = [root], np.full(c, -1, dtype=np.int64)
    best, best_from = mi[:, root].copy(), np.full(c, root)
    done = np.zeros(c, dtype=bool)
    done[root] = True
    for _ in range(c - 1):
        k = int(np.argmax(np.where(done, -np.inf, best)))
        parent[k], done[k] = best_from[k], True
        order.append(k)
        better = ~done & (mi[:, k] > best)
        best[better], best_from[better] = mi[better, k], k
    return np.asarray(order, dtype=np.int64), parent


def quantize_rows(counts: np.ndarray) -> np.ndarray:
    """Counts (..., L) -> u16 cumulative starts of frequencies that sum to 2**16, each >= 1 (KT-smoothed)."""
    levels = counts.shape[-1]
    p = (counts + SMOOTHING) / (counts + SMOOTHING).sum(-1, keepdims=True)
    f = 1 + np.floor(p * ((1 << TABLE_BITS) - levels)).astype(np.int64)
    rest = (1 << TABLE_BITS) - f.sum(-1)
    np.put_along_axis(f, p.argmax(-1)[..., None], np.take_along_axis(f, p.argmax(-1)[..., None], -1) + rest[..., None],
                      -1)
    cum = np.concatenate([np.zeros(f.shape[:-1] + (1,), dtype=np.int64), np.cumsum(f, -1)[..., :-1]], -1)
    return cum.astype(np.uint16)


def fit(codes: np.ndarray, bits: int, kind: str, max_table_bytes: int = MAX_TABLE_BYTES) -> EntropyModel:
    """Fit ``kind``'s tables on calibration codes (N, C, H, W) of one cut (the first images, up to
    :data:`FIT_VALUES` codes).

    Where one table per channel would exceed ``max_table_bytes``, channels share tables: they are sorted by the
    entropy of their codes and split into as many contiguous groups as fit.
    """
    codes = np.asarray(codes)
    if codes.ndim != 4 or codes.shape[0] < 1:
        raise EntropyError(f"entropy model calibration codes must be (N, C, H, W), got shape {codes.shape}")
    n, c, h, w = codes.shape
    codes = codes[:max(1, min(n, FIT_VALUES // max(c * h * w, 1)))]  # the first images up to FIT_VALUES codes
    tpl, levels = template(kind, bits), 2 ** bits
    if codes.size and int(codes.max()) >= levels:
        raise EntropyError(f"code {int(codes.max())} does not fit in bits={bits}")
    if not tpl.own:  # order-0: no terms
        lut = np.zeros(levels, dtype=np.uint8)
    else:
        lut = equal_mass_lut(codes, bits, tpl.levels) if bits > 2 else identity_lut(bits)
    if tpl.parent:
        order, parent = chow_liu(codes, lut)
    else:
        order, parent = np.arange(c), np.full(c, -1, dtype=np.int64)
    ctx = contexts(codes, lut, tpl, parent)
    k = tpl.contexts
    idx = (np.arange(c)[None, :, None, None] * k + ctx) * levels + codes.astype(np.int64)
    counts = np.bincount(idx.ravel(), minlength=c * k * levels).reshape(c, k, levels).astype(np.float64)
    groups = max(1, min(c, (max_table_bytes - 6 * c) // (k * levels * 2)))
    if groups < c:
        hist = counts.sum(1)
        ent = np.array([_entropy_bits(r / max(r.sum(), 1)) for r in hist])
        rank = np.empty(c, dtype=np.int64)
        rank[np.argsort(ent, kind="stable")] = np.arange(c)
        group = rank * groups // c
        gcounts = np.zeros((groups, k, levels))
        np.add.at(gcounts, group, counts)
    else:
        group, gcounts = np.arange(c), counts
    return EntropyModel(kind, bits, order, parent, group, quantize_rows(gcounts), lut)
