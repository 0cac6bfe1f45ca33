"""Entropy coding of the quantized cut: static probability tables fitted on calibration images, coded with rANS.

Two models, both lossless with respect to the b-bit codes (accuracy does not change, only bytes and costs):

``ans``
    one order-0 table per channel group: the distribution of a channel's codes.
``ans_ctx``
    a context model: the probability of a code given already-coded neighbours in its own channel and in its
    *parent* channel. The parent is chosen at calibration by a Chow-Liu tree (the maximum spanning tree of the
    channels' pairwise mutual information), so every channel is coded after the channel that predicts it best;
    the parent is fully known when a channel is coded, so its values to the right and below count too.

Templates (``(dy, dx)`` = the code at row ``y - dy``, column ``x - dx``; outside the map reads 0; a channel without
a parent reads 0 for the parent terms):

====  ===========================================  =====================  ==========
bits  own channel                                  parent channel         contexts
====  ===========================================  =====================  ==========
1     W (0,1), N (1,0), NW (1,1), NE (1,-1),        same (0,0), E (0,-1),  2^8 = 256
      WW (0,2)                                     S (-1,0)
2     W, N, NW, NE                                 same                   4^5 = 1024
3-8   W, N, NW (top 2 bits of each code)           same (top 2 bits)      4^4 = 256
====  ===========================================  =====================  ==========

The context number is ``sum_i v_i * G**i`` over the terms in that order (own terms first), ``G = 2**min(bits, 2)``
and ``v_i`` the term's code (its top two bits for b > 2). A richer template, adapting the tables while coding and
models per channel group were measured (docs/entropy_coding.md); what is here is what paid. Templates
and coding order: :mod:`models.entropy_context`; fitting: :mod:`models.entropy_fit`.

Tables: frequencies of each (channel group, context) row sum to ``2**16``, every symbol >= 1 (16-bit cumulative
starts, so a node keeps them in flash as u16). The coder is constriction's rANS ``AnsCoder`` (32-bit words, 64-bit
state, 24-bit precision); a row's 16-bit frequencies are scaled by 256. Symbols are coded channel by channel in the
model's channel order, and within a channel by wave ``t = 2y + x`` then by ``y``, so every neighbour of a
position is decoded before it and a decoder can decode one wave at a time. The body is the model's CRC-32 (u32, so
an edge holding other tables refuses the payload) followed by the coder's words (u32 little-endian). The deploy
bundle's README states the whole algorithm for a C node.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from models.entropy_context import (  # noqa: F401 - the context model is part of this module's API
    KINDS,
    EntropyError,
    Template,
    contexts,
    identity_lut,
    template,
    wave_order,
)

TABLE_BITS = 16  # table frequencies sum to 2**16 (u16 cumulative starts on the node)
PRECISION = 24  # constriction's DefaultAnsCoder: 32-bit words, 64-bit state, 24-bit probabilities
SMOOTHING = 0.5  # Krichevsky-Trofimov pseudo-count per symbol and context
# Largest table a fitted model may take (u16 entries); beyond it channels share tables in groups. Assumption: a
# quarter of the STM32H7A3's 2 MiB flash (the tables are constants); the memory check prices what a model holds.
MAX_TABLE_BYTES = 256 * 1024
CHOW_LIU_SAMPLES = 16384  # positions per channel used to estimate the mutual information
FIT_VALUES = 1 << 22  # codes a fit reads at most (4 M: 41 calibration images at Tiny-YOLOv3's j=1, 160 px)
ENCODE_CHUNK = 1 << 18  # weights per constriction call (1 MiB of float32): the encoder's rows stay in cache


@dataclass(frozen=True, eq=False)
class EntropyModel:
    """Fitted tables of one entropy codec for one cut (channels, bits).

    Attributes:
        kind: ``ans`` or ``ans_ctx``. bits: the codes' bit width. order: channels in coding order. parent: each
        channel's parent (-1: none; always coded before it). group: each channel's table group. cum: (groups,
        contexts, 2**bits) u16 cumulative starts of the 16-bit frequency rows (``cum[..., 0] == 0``).
    """

    kind: str
    bits: int
    order: np.ndarray
    parent: np.ndarray
    group: np.ndarray
    cum: np.ndarray
    lut: np.ndarray

    def __post_init__(self) -> None:
        tpl = template(self.kind, self.bits)
        c, levels = len(self.order), 2 ** self.bits
        if sorted(self.order.tolist()) != list(range(c)) or len(self.parent) != c or len(self.group) != c:
            raise EntropyError(f"entropy model: order, parent and group must cover the same {c} channels")
        pos = np.empty(c, dtype=np.int64)
        pos[self.order] = np.arange(c)
        bad = [k for k in range(c) if self.parent[k] >= c or (self.parent[k] >= 0 and pos[self.parent[k]] >= pos[k])]
        if bad:
            raise EntropyError(f"entropy model: channel {bad[0]}'s parent is not coded before it")
        if self.cum.ndim != 3 or self.cum.shape[1:] != (tpl.contexts, levels) or self.cum.dtype != np.uint16:
            raise EntropyError(f"entropy model tables have shape {self.cum.shape} {self.cum.dtype}, expected "
                               f"(groups, {tpl.contexts}, {levels}) uint16")
        if self.group.min(initial=0) < 0 or self.group.max(initial=0) >= len(self.cum):
            raise EntropyError(f"entropy model: a channel group is outside the {len(self.cum)} tables")
        if self.lut.shape != (levels,) or int(self.lut.max()) >= tpl.levels:
            raise EntropyError(f"entropy model term table must map {levels} codes to 0..{tpl.levels - 1}")
        freq = self.freq
        if (self.cum[..., 0] != 0).any() or (freq < 1).any():
            raise EntropyError("entropy model tables: every row must start at 0 and give every symbol a frequency >= 1")

    @property
    def template(self) -> Template:
        return template(self.kind, self.bits)

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def freq(self) -> np.ndarray:
        """(groups, contexts, 2**bits) 16-bit frequencies (rows sum to 2**16)."""
        c = self.cum.astype(np.int64)
        return np.diff(np.concatenate([c, np.full(c.shape[:-1] + (1,), 1 << TABLE_BITS)], -1), axis=-1)

    @property
    def table_bytes(self) -> int:
        """What a node stores: the u16 cumulative tables and the u16 order, parent and group of each channel."""
        return int(self.cum.size * 2 + 3 * 2 * self.channels + len(self.lut))

    def _canonical(self) -> bytes:
        head = np.array([KINDS.index(self.kind), self.bits, self.channels, *self.cum.shape], dtype="<u4").tobytes()
        return (head + self.order.astype("<u2").tobytes() + self.parent.astype("<i2").tobytes()
                + self.group.astype("<u2").tobytes() + self.lut.astype("u1").tobytes()
                + self.cum.astype("<u2").tobytes())

    @property
    def crc32(self) -> int:
        return zlib.crc32(self._canonical())

    # -------------------------------------------------------------------------------------- coding

    @cached_property
    def weights(self) -> np.ndarray:
        """(groups, contexts, 2**bits) float32 coder weights: constriction's ``Categorical(perfect=False)`` turns a
        row of weights w summing to 2**24 - L into the frequencies w + 1, exactly (float32 holds them exactly)."""
        return (self.freq * (1 << (PRECISION - TABLE_BITS)) - 1).astype(np.float32)

    def _stream(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Symbols of ``codes`` (C, H, W) in stream order and the (group, context) row of each."""
        c, h, w = codes.shape
        order, _ = wave_order(h, w)
        ctx = contexts(codes, self.lut, self.template, self.parent)[self.order].reshape(c, -1)[:, order]
        sym = codes.astype(np.int32)[self.order].reshape(c, -1)[:, order].ravel()
        grp = np.broadcast_to(self.group[self.order][:, None], ctx.shape)
        return sym, (grp * self.template.contexts + ctx).ravel()

    def encode(self, codes: np.ndarray) -> bytes:
        """Body of one feature map (C, H, W) of uint8 codes: the model's CRC-32 and the rANS words."""
        import constriction

        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[0] != self.channels:
            raise EntropyError(f"codes of shape {codes.shape} for an entropy model of {self.channels} channels")
        if codes.size and int(codes.max()) >= 1 << self.bits:
            raise EntropyError(f"code {int(codes.max())} does not fit in bits={self.bits}")
        sym, rows = self._stream(codes)
        coder = constriction.stream.stack.AnsCoder()
        family = constriction.stream.model.Categorical(perfect=False)
        table = self.weights.reshape(-1, 2 ** self.bits)
        step = max(1, ENCODE_CHUNK // 2 ** self.bits)
        for a in reversed(range(0, len(sym), step)):  # a stack: the last chunk first, each reversed = all reversed
            coder.encode_reverse(sym[a:a + step], family, table[rows[a:a + step]])
        return np.uint32(self.crc32).astype("<u4").tobytes() + coder.get_compressed().astype("<u4").tobytes()

    def max_body_bytes(self, values: int) -> int:
        """Largest body a stream of ``values`` codes can have: 16 bits per code at most (every frequency is
        >= 1 of 2**16), the coder's final state and the CRC."""
        return 4 + 4 * (math.ceil(values * TABLE_BITS / 32) + 2)

    def decode(self, body: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Inverse of :meth:`encode`. Raises :class:`EntropyError` (one line) for anything wrong; the work is bounded
        by ``shape`` (one decode per wave, at most 16 bits per code)."""
        import constriction

        c, h, w = shape
        if c != self.channels:
            raise EntropyError(f"payload declares {c} channels, the entropy model codes {self.channels}")
        if len(body) < 4 or len(body) % 4:
            raise EntropyError(f"entropy-coded body of {len(body)} bytes is not the model CRC plus whole 32-bit words")
        if len(body) > self.max_body_bytes(c * h * w):
            raise EntropyError(f"entropy-coded body of {len(body)} bytes exceeds the bound "
                               f"{self.max_body_bytes(c * h * w)} for {c}x{h}x{w} codes")
        (crc,) = np.frombuffer(body[:4], dtype="<u4")
        if int(crc) != self.crc32:
            raise EntropyError(f"payload was coded with entropy model {int(crc):08x}, this side holds "
                               f"{self.crc32:08x}")
        words = np.frombuffer(body[4:], dtype="<u4").astype(np.uint32)
        if len(words) and words[-1] == 0:
            raise EntropyError("entropy-coded body ends in a zero word: not a coder's output")
        coder = constriction.stream.stack.AnsCoder(words)
        family = constriction.stream.model.Categorical(perfect=False)
        out = np.zeros((c, h, w), dtype=np.uint8)
        flat = out.reshape(c, -1)
        order, starts = wave_order(h, w)
        tpl, wts = self.template, self.weights
        ys, xs = np.divmod(order, w)
        for ch in self.order:
            g = self.group[ch]
            if not tpl.own and not tpl.parent:  # order-0: the whole channel at once
                flat[ch, order] = coder.decode(family, np.ascontiguousarray(
                    np.broadcast_to(wts[g, 0], (h * w, wts.shape[-1]))))
                continue
            par = self.parent[ch]
            for a, b in zip(starts[:-1], starts[1:], strict=True):
                ctx = self._position_contexts(out, ch, par, ys[a:b], xs[a:b])
                flat[ch, order[a:b]] = coder.decode(family, wts[g, ctx])
        if not coder.is_empty():
            raise EntropyError("entropy-coded body has data left after the declared codes: corrupted or wrong shape")
        return out

    def _position_contexts(self, out: np.ndarray, ch: int, par: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """:func:`contexts` at positions (y, x) of channel ``ch``, reading the codes decoded so far."""
        tpl, (_, h, w), lut = self.template, out.shape, self.lut.astype(np.int64)
        ctx = np.zeros(len(y), dtype=np.int64)
        mult = 1
        terms = [(ch, d) for d in tpl.own] + [(par, d) for d in tpl.parent]
        for src, (dy, dx) in terms:
            if src >= 0:
                yy, xx = y - dy, x - dx
                ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                v = np.zeros(len(y), dtype=np.int64)
                v[ok] = lut[out[src, yy[ok], xx[ok]]]
                ctx += v * mult
            mult *= tpl.levels
        return ctx

    # -------------------------------------------------------------------------------------- storage

    def to_json(self) -> dict:
        """The model as interface.json holds it (tables as base64 of little-endian u16)."""
        return {"kind": self.kind, "bits": self.bits, "channels": self.channels, "order": self.order.tolist(),
                "parent": self.parent.tolist(), "group": self.group.tolist(), "term_of_code": self.lut.tolist(),
                "terms": [["own", dy, dx] for dy, dx in self.template.own]
                + [["parent", dy, dx] for dy, dx in self.template.parent],
                "term_levels": self.template.levels, "table_shape": list(self.cum.shape),
                "cum_u16le_base64": base64.b64encode(self.cum.astype("<u2").tobytes()).decode(),
                "crc32": self.crc32}

    @classmethod
    def from_json(cls, d: dict) -> EntropyModel:
        try:
            cum = np.frombuffer(base64.b64decode(d["cum_u16le_base64"]), dtype="<u2").astype(np.uint16)
            m = cls(str(d["kind"]), int(d["bits"]), np.asarray(d["order"], dtype=np.int64),
                    np.asarray(d["parent"], dtype=np.int64), np.asarray(d["group"], dtype=np.int64),
                    cum.reshape(tuple(int(s) for s in d["table_shape"])),
                    np.asarray(d["term_of_code"], dtype=np.uint8))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, EntropyError):
                raise
            raise EntropyError(f"entropy model record is malformed: {e}") from None
        tpl = m.template
        if "terms" in d and [tuple(t) for t in d["terms"]] != [("own", *o) for o in tpl.own] + \
                [("parent", *o) for o in tpl.parent]:
            raise EntropyError(f"entropy model record's terms {d['terms']} are not {m.kind}'s at bits={m.bits}")
        if "crc32" in d and int(d["crc32"]) != m.crc32:
            raise EntropyError(f"entropy model record's crc32 {int(d['crc32']):08x} does not match its tables "
                               f"({m.crc32:08x})")
        return m
