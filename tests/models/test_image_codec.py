"""The coded image at j=0: Pillow's JPEG / WebP framed like every payload, refused with one line when hostile."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from models.codec import HEADER_BYTES, KIND_JPEG, KIND_WEBP, PayloadError, decode, encode_image
from models.image_codec import IMAGE_CODECS, get_image_codec, roundtrip
from models.interface import ImageInterface


def photo(seed: int = 0, h: int = 40, w: int = 56) -> np.ndarray:
    """A smooth image with noise (compresses like a photo, not like white noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.int64)
    return np.clip(base + rng.integers(-12, 12, base.shape), 0, 255).astype(np.uint8)


def pillow(img: np.ndarray, fmt: str, quality: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, quality=quality, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("name,fmt,kw", [("jpeg", "JPEG", {}), ("webp", "WEBP", {"method": 4})])
@pytest.mark.parametrize("quality", [5, 50, 90])
def test_bytes_are_the_library_file_plus_the_header_and_decode_to_what_pillow_decodes(name, fmt, kw, quality):
    img = photo(quality)
    ref = pillow(img, fmt, quality, **kw)
    data = get_image_codec(name).encode(img, quality)
    assert data == ref  # the library's own bytes, nothing estimated
    payload = encode_image(data, name, img.shape[:2], quality)
    assert len(payload) == len(ref) + HEADER_BYTES
    d = decode(payload)
    assert d.kind == {"jpeg": KIND_JPEG, "webp": KIND_WEBP}[name] and d.codec == "none" and d.mu == quality
    expect = np.asarray(Image.open(io.BytesIO(ref)).convert("RGB"))
    assert np.array_equal(d.image.numpy(), expect)
    assert np.abs(expect.astype(int) - img.astype(int)).mean() > 0  # lossy: the edge sees other pixels


def test_lower_quality_is_smaller_and_a_lossless_codec_never_grows_it():
    img = photo(3, 96, 96)
    for name in IMAGE_CODECS:
        sizes = [len(get_image_codec(name).encode(img, q)) for q in (10, 50, 90)]
        assert sizes[0] < sizes[1] < sizes[2]
        data = get_image_codec(name).encode(img, 50)
        framed = encode_image(data, name, (96, 96), 50, "zlib")
        assert len(framed) <= len(data) + HEADER_BYTES
        assert np.array_equal(decode(framed).image.numpy(), get_image_codec(name).decode(data))


@pytest.mark.parametrize("bad", [0, 96, -1, 50.5, True, "50"])
def test_bad_jpeg_quality_is_one_line(bad):
    with pytest.raises(ValueError, match=r"^jpeg quality=.* not an integer in 1\.\.95$") as e:
        get_image_codec("jpeg").encode(photo(), bad)
    assert "\n" not in str(e.value)


def test_unknown_image_codec_is_one_line():
    with pytest.raises(ValueError, match=r"image codec 'avif' not in \['jpeg', 'webp'\]"):
        get_image_codec("avif")
    with pytest.raises(ValueError, match="image codec 'png'"):
        ImageInterface(codec="png", quality=50)


def _reframe(payload: bytes, body: bytes, shape=None) -> bytes:
    """The same header over another body (or declared shape), with a valid CRC."""
    head = bytearray(payload[:HEADER_BYTES - 4])
    if shape is not None:
        struct.pack_into("<HHH", head, 6, *shape)
    crc = zlib.crc32(body, zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack("<I", crc) + body


@pytest.mark.parametrize("name", list(IMAGE_CODECS))
def test_hostile_image_payloads_are_refused_with_one_line(name):
    img = photo(1)
    data = get_image_codec(name).encode(img, 40)
    good = encode_image(data, name, img.shape[:2], 40)
    cases = {
        "truncated": good[:-10],  # the CRC catches it
        "bit flipped": good[:HEADER_BYTES + 30] + bytes([good[HEADER_BYTES + 30] ^ 0x10]) + good[HEADER_BYTES + 31:],
        "truncated file, valid CRC": _reframe(good, data[: len(data) // 2]),
        "not an image, valid CRC": _reframe(good, b"\x00" * 64),
        "declared shape differs": _reframe(good, data, (3, 80, 56)),
        "body beyond the shape's bound": _reframe(good, data + b"\x00" * (2 * 3 * 40 * 56 + 5000), (3, 40, 56)),
        "declared 4 channels": _reframe(good, data, (4, 40, 56)),
    }
    for what, p in cases.items():
        with pytest.raises(PayloadError) as e:
            decode(p)
        assert "\n" not in str(e.value), what


def test_a_huge_declared_image_is_refused_before_its_pixels_are_decoded():
    # a JPEG whose own header says 60000 x 60000 (a decompression bomb) in a frame that declares 40 x 56
    img = photo(2, 16, 16)
    data = bytearray(get_image_codec("jpeg").encode(img, 50))
    sof = data.find(b"\xff\xc0")
    for size, msg in ((400, "400x400, declared 40x56"), (60000, "decompression-bomb limit")):
        struct.pack_into(">HH", data, sof + 5, size, size)
        with pytest.raises(PayloadError, match=msg):
            decode(encode_image(bytes(data), "jpeg", (40, 56), 50))


def test_image_interface_shows_the_edge_the_decoded_image():
    imgs = np.stack([photo(k, 32, 32) for k in range(3)])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    for name in IMAGE_CODECS:
        iface = ImageInterface(codec=name, quality=30).eval()
        got = iface(x)
        want = torch.from_numpy(roundtrip(imgs, name, 30)).permute(0, 3, 1, 2).float() / 255
        assert torch.allclose(got, want, atol=1e-6)
        assert (got - x).abs().max() > 0.02
    raw = ImageInterface()
    assert torch.allclose(raw(x), x, atol=0.5 / 255)
    # the straight-through estimator: a gradient reaches the input unchanged
    x.requires_grad_(True)
    ImageInterface(codec="jpeg", quality=30)(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
