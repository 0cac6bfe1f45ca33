"""Payload codec: pack b-bit codes into exactly ceil(C*H*W*b/8) bytes, compress, and frame them.

Frame = 24-byte header + body. The header makes a payload self-describing::

    magic "SP" | version u8 | kind u8 | codec u8 | bits u8 | C u16 | H u16 | W u16 | mu f32 | max f32 | crc32 u32

``kind`` is 0 for a feature map (body = packed codes, maybe compressed), 1 for detections (the all-in-node point; body =
N rows of x1, y1, x2, y2, class, score as u16, maybe compressed; C holds N), 2 for a JPEG and 3 for a WebP image
(j=0 with a lossy image codec, :mod:`models.image_codec`; body = the encoder's file, maybe compressed; C, H, W =
3, height, width; bits 8; mu holds the quality, max 0). The CRC-32 covers the header
before it and the body. Decoding checks every field before it allocates or decompresses, bounds the
decompressed size by the declared shape, and raises :class:`PayloadError` with one line for anything wrong.

Codecs (:mod:`models.compressors`): ``zlib`` (deflate, the paper's ZIP), ``zstd`` (zstandard), ``lzma`` - byte
compressors over the packed codes - and the entropy codecs ``ans`` and ``ans_ctx`` (:mod:`models.entropy`: rANS
through constriction, tables fitted on calibration images; they code the codes themselves, and both sides need
the cut's :class:`~models.entropy.EntropyModel`). When a codec would make the body larger than the packed bytes,
the encoder stores it uncompressed and the header says ``none`` - a codec never makes a payload larger than
sending it raw.
"""

from __future__ import annotations

import lzma
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import zstandard

from models.compressors import (  # noqa: F401 - the codec table is part of this module's API
    BY_ID,
    CODECS,
    ENTROPY_CODECS,
    Codec,
    PayloadError,
    compress_body,
    decompress_at_most,
    get_codec,
)
from models.entropy import EntropyError, EntropyModel

FORMAT_VERSION = 1
MAGIC = b"SP"
_HEADER = struct.Struct("<2sBBBBHHHffI")
HEADER_BYTES = _HEADER.size  # 24
MAX_VALUES = 1 << 26  # largest C*H*W a decoder accepts (67 M values; 416 px j=1 is 0.69 M)
KIND_FEATURES, KIND_DETECTIONS, KIND_JPEG, KIND_WEBP = 0, 1, 2, 3
KIND_IMAGES = (KIND_JPEG, KIND_WEBP)
_DET_ROW = 6  # x1, y1, x2, y2, class, score


# ------------------------------------------------------------------------------------------- packing


def packed_nbytes(values: int, bits: int) -> int:
    """Bytes of ``values`` codes of ``bits`` bits each, packed: ceil(values * bits / 8)."""
    return math.ceil(values * bits / 8)


def pack_codes(codes: np.ndarray | torch.Tensor, bits: int) -> bytes:
    """Pack uint8 codes (each < 2**bits) MSB-first into ceil(n*bits/8) bytes."""
    a = np.ascontiguousarray(codes.cpu().numpy() if isinstance(codes, torch.Tensor) else codes,
                             dtype=np.uint8).ravel()
    if bits == 8:
        return a.tobytes()
    if a.size and int(a.max()) >= 1 << bits:
        raise ValueError(f"code {int(a.max())} does not fit in bits={bits}")
    planes = np.unpackbits(a[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(planes.ravel()).tobytes()


def unpack_codes(buf: bytes, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``n`` uint8 codes."""
    a = np.frombuffer(buf, dtype=np.uint8)
    if bits == 8:
        return a[:n].copy()
    planes = np.unpackbits(a)[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, 8 - bits:] = planes
    return np.packbits(full, axis=1).ravel()


# ------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class Decoded:
    """A decoded payload. ``codes`` is (C, H, W) uint8 for features; ``detections`` (N, 6) float."""

    kind: int
    codec: str
    bits: int
    mu: float
    max: float
    codes: torch.Tensor | None = None
    detections: torch.Tensor | None = None
    image: torch.Tensor | None = None  # (H, W, 3) uint8, for the image kinds


def _frame(kind: int, codec: str, bits: int, shape: tuple[int, int, int], mu: float, mx: float,
           body: bytes) -> bytes:
    if any(not 0 <= s <= 0xFFFF for s in shape):
        raise ValueError(f"payload shape {shape} does not fit the header's u16 fields")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, CODECS[codec].ident, bits, *shape, mu, mx, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def encode_features(codes: torch.Tensor, bits: int, mu: float, max_: float, codec: str = "zlib",
                    level: int | None = None, model: EntropyModel | None = None) -> bytes:
    """Frame quantized codes of one feature map.

    Args:
        codes: (C, H, W) uint8 codes from :meth:`QuantInterface.quantize`.
        bits: bit width b.
        mu, max_: the interface's calibration (Eq. 5/6), carried so the edge needs nothing else.
        codec: one of :data:`CODECS`; level: its compression level (default: the library's).
        model: the cut's entropy model, for ``ans`` / ``ans_ctx`` (its kind must be the codec).
    """
    if codes.dim() != 3:
        raise ValueError(f"codes must be (C, H, W), got shape {tuple(codes.shape)}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} not in 1..8")
    packed = pack_codes(codes, bits)
    if get_codec(codec).entropy:
        if model is None or model.kind != codec or model.bits != bits:
            raise ValueError(f"codec={codec!r} needs the cut's {codec} entropy model at bits={bits}, got "
                             f"{'none' if model is None else f'{model.kind} at bits={model.bits}'}")
        body = model.encode(codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes))
        body, used = (body, codec) if len(body) < len(packed) else (packed, "none")
    else:
        body, used = compress_body(packed, codec, level)
    return _frame(KIND_FEATURES, used, bits, tuple(codes.shape), mu, max_, body)


def encode_detections(dets: torch.Tensor, codec: str = "zlib", level: int | None = None) -> bytes:
    """Frame the all-in-node point's detections (N, 6: x1, y1, x2, y2 in pixels, score in [0, 1], class) as u16 rows."""
    d = dets.detach().float().cpu()
    if d.dim() != 2 or d.shape[1] != 6:
        raise ValueError(f"detections must be (N, 6), got shape {tuple(d.shape)}")
    rows = torch.stack([*(d[:, k].round().clamp(0, 0xFFFF) for k in range(4)),
                        d[:, 5].clamp(0, 0xFFFF), (d[:, 4].clamp(0, 1) * 0xFFFF).round()], 1)
    raw = rows.numpy().astype("<u2").tobytes()
    body, used = compress_body(raw, codec, level)
    return _frame(KIND_DETECTIONS, used, 16, (len(d), _DET_ROW, 1), 0.0, 0.0, body)


def encode_image(data: bytes, image_codec: str, shape: tuple[int, int], quality: int, codec: str = "none",
                 level: int | None = None) -> bytes:
    """Frame one coded image (the bytes :meth:`models.image_codec.ImageCodec.encode` returned).

    Args:
        data: the JPEG/WebP file. image_codec: its format (``jpeg``, ``webp``). shape: (H, W) of the image.
        quality: the encoder quality (carried for the record; the decoder does not need it).
        codec, level: a lossless codec over the file (it falls back to ``none`` where it would not shrink it).
    """
    from models.image_codec import get_image_codec

    c = get_image_codec(image_codec)
    body, used = compress_body(bytes(data), codec, level)
    return _frame(c.kind, used, 8, (3, *shape), float(quality), 0.0, body)


def decode(payload: bytes | bytearray | memoryview, max_values: int = MAX_VALUES,
           models: dict[str, EntropyModel] | None = None) -> Decoded:
    """Parse, check and decompress a payload. Raises :class:`PayloadError` on anything wrong.

    Args:
        models: the cut's entropy models by codec name, for an ``ans`` / ``ans_ctx`` body.
    """
    payload = bytes(payload)
    if len(payload) < HEADER_BYTES:
        raise PayloadError(f"payload is {len(payload)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, kind, codec_id, bits, c, h, w, mu, mx, crc = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise PayloadError(f"bad magic {magic!r}, expected {MAGIC!r}: not a split-CNN payload")
    if version != FORMAT_VERSION:
        raise PayloadError(f"payload format version {version}, this decoder reads version {FORMAT_VERSION}")
    body = payload[HEADER_BYTES:]
    if zlib.crc32(body, zlib.crc32(payload[: HEADER_BYTES - 4])) != crc:
        raise PayloadError("CRC-32 mismatch: payload is corrupted or truncated")
    if kind not in (KIND_FEATURES, KIND_DETECTIONS, *KIND_IMAGES):
        raise PayloadError(f"unknown payload kind {kind}, expected 0 (features), 1 (detections), 2 (JPEG) or 3 (WebP)")
    if codec_id not in BY_ID:
        raise PayloadError(f"unknown codec id {codec_id}, expected one of {sorted(BY_ID)}")
    codec = BY_ID[codec_id]
    values = c * h * w
    if values > max_values:
        raise PayloadError(f"declared shape {c}x{h}x{w} = {values} values exceeds the limit {max_values}")
    exact = True
    if codec.entropy and kind != KIND_FEATURES:
        raise PayloadError(f"codec {codec.name} codes feature maps only, the header declares kind {kind}")
    if kind == KIND_FEATURES:
        if not 1 <= bits <= 8:
            raise PayloadError(f"bits={bits} in header, expected 1..8")
        expected = packed_nbytes(values, bits)
        if codec.entropy:
            model = (models or {}).get(codec.name)
            if model is None:
                raise PayloadError(f"payload is {codec.name}-coded but this side holds no {codec.name} entropy model")
            if model.bits != bits:
                raise PayloadError(f"payload declares bits={bits}, the {codec.name} entropy model codes {model.bits}")
            try:
                codes = model.decode(body, (c, h, w))
            except EntropyError as e:
                raise PayloadError(str(e)) from None
            return Decoded(kind, codec.name, bits, mu, mx, codes=torch.from_numpy(codes))
    elif kind in KIND_IMAGES:
        if c != 3 or bits != 8:
            raise PayloadError(f"image payload declares {c} channels of {bits} bits, expected 3 of 8")
        # a coded image's file is never larger than a few times the raw pixels (a bound, not its size)
        expected, exact = 2 * values + 4096, False
    else:
        if h != _DET_ROW or w != 1:
            raise PayloadError(f"detection payload declares rows of {h}x{w}, expected {_DET_ROW}x1")
        expected = values * 2
    try:
        raw = codec.decompress(body, expected) if exact else decompress_at_most(codec, body, expected)
    except PayloadError:
        raise
    except (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError) as e:
        raise PayloadError(f"{codec.name} body does not decompress: {e}") from None
    if exact and len(raw) != expected:
        raise PayloadError(f"body holds {len(raw)} bytes, header declares {expected}")
    if kind in KIND_IMAGES:
        from models.image_codec import BY_KIND

        try:
            img = BY_KIND[kind].decode(raw, (h, w))
        except ValueError as e:
            raise PayloadError(str(e)) from None
        return Decoded(kind, codec.name, bits, mu, mx, image=torch.from_numpy(img))
    if kind == KIND_FEATURES:
        codes = torch.from_numpy(unpack_codes(raw, bits, values)).view(c, h, w)
        return Decoded(kind, codec.name, bits, mu, mx, codes=codes)
    rows = np.frombuffer(raw, dtype="<u2").reshape(c, _DET_ROW).astype(np.float32)
    det = torch.from_numpy(rows[:, [0, 1, 2, 3, 5, 4]].copy())
    det[:, 4] /= 0xFFFF
    return Decoded(kind, codec.name, 16, 0.0, 0.0, detections=det)
