"""The context side of :mod:`models.entropy`: the codecs' templates (which already-coded neighbours, in the own
channel and in the parent channel, form a code's context), the coding order (waves t = 2y + x) and the context
numbers of a whole map."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

KINDS = ("ans", "ans_ctx")


class EntropyError(ValueError):
    """A body or model that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class Template:
    own: tuple[tuple[int, int], ...]
    parent: tuple[tuple[int, int], ...]
    levels: int  # G: values per term

    @property
    def contexts(self) -> int:
        return self.levels ** (len(self.own) + len(self.parent))


def template(kind: str, bits: int) -> Template:
    if kind not in KINDS:
        raise EntropyError(f"entropy codec {kind!r} not in {list(KINDS)}")
    if not 1 <= bits <= 8:
        raise EntropyError(f"bits={bits} not in 1..8")
    if kind == "ans":
        return Template((), (), 1)
    if bits == 1:
        return Template(((0, 1), (1, 0), (1, 1), (1, -1), (0, 2)), ((0, 0), (0, -1), (-1, 0)), 2)
    if bits == 2:
        return Template(((0, 1), (1, 0), (1, 1), (1, -1)), ((0, 0),), 4)
    return Template(((0, 1), (1, 0), (1, 1)), ((0, 0),), 4)


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[..., y, x] = x[..., y - dy, x - dx]``, 0 outside the map."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@lru_cache(maxsize=64)
def wave_order(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of an h x w map in coding order (by ``t = 2y + x``, then ``y``) as flat indices, and the start of
    each wave in that order (plus the end)."""
    y, x = np.divmod(np.arange(h * w), w)
    t = 2 * y + x
    order = np.lexsort((y, t))
    starts = np.r_[0, np.flatnonzero(np.diff(t[order])) + 1, h * w]
    return order, starts


def identity_lut(bits: int) -> np.ndarray:
    return np.arange(2 ** bits, dtype=np.uint8)


def contexts(codes: np.ndarray, lut: np.ndarray, tpl: Template, parent: np.ndarray) -> np.ndarray:
    """Context number of every code of ``codes`` (..., C, H, W) under ``tpl`` (``parent[c]`` < 0: none); ``lut``
    maps a code to its term value."""
    x = lut.astype(np.int64)[codes.astype(np.int64)]
    ctx = np.zeros_like(x)
    g, mult = tpl.levels, 1
    for dy, dx in tpl.own:
        ctx += _shift(x, dy, dx) * mult
        mult *= g
    if tpl.parent:
        root = parent < 0
        px = x[..., np.where(root, 0, parent), :, :]
        px[..., root, :, :] = 0
        for dy, dx in tpl.parent:
            ctx += _shift(px, dy, dx) * mult
            mult *= g
    return ctx


