"""The lossless codecs a payload body can go through: the byte compressors from their libraries (``zlib``: deflate,
the paper's ZIP; ``zstd``; ``lzma``) with decompression bounded by the size the frame declares, and the entropy
codecs' entries (``ans``, ``ans_ctx``: :mod:`models.entropy`, which code the codes, not bytes)."""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard


class PayloadError(ValueError):
    """A payload that cannot be decoded; the message says why in one line."""


@dataclass(frozen=True)
class Codec:
    name: str
    ident: int
    default_level: int | None
    levels: tuple[int, int] | None
    compress: Callable[[bytes, int | None], bytes]
    decompress: Callable[[bytes, int], bytes]
    entropy: bool = False  # codes the b-bit codes with a fitted model (models.entropy), not the packed bytes


def _needs_model(b, n):
    raise PayloadError("an entropy-coded body needs the cut's entropy model")


def _bounded(read: Callable[[int], bytes], expected: int, name: str) -> bytes:
    out = read(expected + 1)
    if len(out) != expected:
        raise PayloadError(f"{name} body decompresses to {len(out)}{'+' if len(out) > expected else ''} bytes, "
                           f"header declares {expected}")
    return out


def _zlib_decompress(body: bytes, expected: int) -> bytes:
    d = zlib.decompressobj()
    out = _bounded(lambda n: d.decompress(body, n), expected, "zlib")
    if not d.eof or d.unused_data:
        raise PayloadError("zlib body is truncated or has trailing data")
    return out


def _zstd_decompress(body: bytes, expected: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=False)
    return _bounded(reader.read, expected, "zstd")


def _lzma_decompress(body: bytes, expected: int) -> bytes:
    d = lzma.LZMADecompressor()
    out = _bounded(lambda n: d.decompress(body, max_length=n), expected, "lzma")
    if not d.eof or d.unused_data:
        raise PayloadError("lzma body is truncated or has trailing data")
    return out


def decompress_at_most(codec: Codec, body: bytes, limit: int) -> bytes:
    """Decompress a body whose size the header does not fix (a coded image), refusing more than ``limit`` bytes."""
    if codec.name == "none":
        if len(body) > limit:
            raise PayloadError(f"body of {len(body)} bytes exceeds the limit {limit} for the declared shape")
        return body
    if codec.name == "zstd":
        out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=False).read(limit + 1)
    else:
        d = zlib.decompressobj() if codec.name == "zlib" else lzma.LZMADecompressor()
        out = d.decompress(body, limit + 1) if codec.name == "zlib" else d.decompress(body, max_length=limit + 1)
        if len(out) <= limit and (not d.eof or d.unused_data):
            raise PayloadError(f"{codec.name} body is truncated or has trailing data")
    if len(out) > limit:
        raise PayloadError(f"{codec.name} body decompresses to more than the limit {limit} for the declared shape")
    return out


CODECS: dict[str, Codec] = {
    "none": Codec("none", 0, None, None, lambda b, lv: b, lambda b, n: b),
    # zlib level 6 is deflate's (and ZIP tools') default
    "zlib": Codec("zlib", 1, 6, (0, 9), lambda b, lv: zlib.compress(b, lv), _zlib_decompress),
    # zstd level 3 is the library's default
    "zstd": Codec("zstd", 2, 3, (-7, 22),
                  lambda b, lv: zstandard.ZstdCompressor(level=lv, write_content_size=True).compress(b),
                  _zstd_decompress),
    # xz preset 6 is the library's default
    "lzma": Codec("lzma", 3, 6, (0, 9), lambda b, lv: lzma.compress(b, preset=lv), _lzma_decompress),
    # rANS with static per-channel tables / a context model (models.entropy); feature maps only
    "ans": Codec("ans", 4, None, None, _needs_model, _needs_model, entropy=True),
    "ans_ctx": Codec("ans_ctx", 5, None, None, _needs_model, _needs_model, entropy=True),
}
ENTROPY_CODECS = tuple(n for n, c in CODECS.items() if c.entropy)
BY_ID = {c.ident: c for c in CODECS.values()}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ValueError(f"codec={name!r} not in {sorted(CODECS)}")
    return CODECS[name]


def compress_body(raw: bytes, codec: str, level: int | None = None) -> tuple[bytes, str]:
    """Compress ``raw`` with ``codec``; fall back to ``none`` when that would not make it smaller."""
    c = get_codec(codec)
    if c.entropy:
        raise ValueError(f"codec={codec!r} codes feature maps with their entropy model, not bytes: use "
                         f"{sorted(n for n, k in CODECS.items() if not k.entropy)} here")
    if c.levels is not None:
        level = c.default_level if level is None else level
        lo, hi = c.levels
        if not lo <= level <= hi:
            raise ValueError(f"{codec} level={level} not in {lo}..{hi}")
    body = c.compress(raw, level)
    if c.name != "none" and len(body) >= len(raw):
        return raw, "none"
    return body, c.name
