from __future__ import annotations

import lzma
import math
import struct
import zlib

import numpy as np
import pytest
import torch

from models import CODECS, PayloadError, decode, encode_detections, encode_features, packed_nbytes
from models.codec import ENTROPY_CODECS, HEADER_BYTES, MAGIC, MAX_VALUES, pack_codes, unpack_codes
from models.entropy_fit import fit

HDR = struct.Struct("<2sBBBBHHHffI")


def reframe(head_fields, body):
    """A payload with a valid CRC over arbitrary header fields (to test the checks behind the CRC)."""
    head = HDR.pack(*head_fields, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def codes_for(bits, shape, seed=0, sparse=False):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 2 ** bits, shape, generator=g, dtype=torch.int64)
    if sparse:
        c = torch.where(torch.rand(shape, generator=g) < 0.9, torch.zeros_like(c), c)
    return c.to(torch.uint8)


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("sparse", [False, True])
def test_roundtrip_bit_exact(codec, bits, sparse):
    codes = codes_for(bits, (3, 7, 11), seed=bits, sparse=sparse)  # 231 values: n*b rarely a byte multiple
    models = {codec: fit(codes[None].numpy(), bits, codec)} if CODECS[codec].entropy else {}
    p = encode_features(codes, bits, 0.25, 1.5, codec, model=models.get(codec))
    d = decode(p, models=models)
    assert torch.equal(d.codes, codes)
    assert (d.bits, d.mu, d.max) == (bits, 0.25, 1.5)
    assert d.codec in (codec, "none")


@pytest.mark.parametrize("bits", range(1, 9))
def test_packed_size_is_exact(bits):
    codes = codes_for(bits, (5, 13, 17))
    assert len(pack_codes(codes, bits)) == math.ceil(5 * 13 * 17 * bits / 8) == packed_nbytes(1105, bits)
    assert len(encode_features(codes, bits, 0, 1, "none")) == HEADER_BYTES + packed_nbytes(1105, bits)
    assert np.array_equal(unpack_codes(pack_codes(codes, bits), bits, codes.numel()), codes.flatten().numpy())


def test_one_bit_packing_is_msb_first():
    codes = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.uint8).view(1, 1, 9)
    assert pack_codes(codes, 1) == bytes([0b10000001, 0b10000000])


@pytest.mark.parametrize("codec", ["zlib", "zstd", "lzma"])
def test_codec_never_larger_than_raw(codec):
    codes = codes_for(8, (1, 1, 13))  # 13 random bytes: every codec expands them
    p = encode_features(codes, 8, 0, 1, codec)
    assert len(p) == HEADER_BYTES + 13 and decode(p).codec == "none"
    sparse = torch.zeros(1, 64, 64, dtype=torch.uint8)
    q = encode_features(sparse, 1, 0, 1, codec)
    assert decode(q).codec == codec and len(q) < HEADER_BYTES + 512


def test_codec_levels_checked():
    codes = codes_for(1, (1, 8, 8))
    with pytest.raises(ValueError, match="level"):
        encode_features(codes, 1, 0, 1, "zlib", level=12)
    with pytest.raises(ValueError, match="codec"):
        encode_features(codes, 1, 0, 1, "zip")


@pytest.fixture(scope="module")
def payload():
    return encode_features(codes_for(3, (2, 9, 9), sparse=True), 3, 0.5, 2.0, "zlib")


def test_every_truncation_raises(payload):
    for n in range(len(payload)):
        with pytest.raises(PayloadError):
            decode(payload[:n])


def test_every_single_bit_flip_raises(payload):
    for i in range(len(payload) * 8):
        b = bytearray(payload)
        b[i // 8] ^= 1 << (i % 8)
        with pytest.raises(PayloadError):
            decode(b)


def test_wrong_version_and_magic(payload):
    fields = list(HDR.unpack_from(payload))[:-1]
    body = payload[HEADER_BYTES:]
    with pytest.raises(PayloadError, match="version 9"):
        decode(reframe([fields[0], 9, *fields[2:]], body))
    with pytest.raises(PayloadError, match="magic"):
        decode(reframe([b"XX", *fields[1:]], body))
    with pytest.raises(PayloadError, match="codec id"):
        decode(reframe([*fields[:3], 77, *fields[4:]], body))
    with pytest.raises(PayloadError, match="bits"):
        decode(reframe([*fields[:4], 0, *fields[5:]], body))
    with pytest.raises(PayloadError, match="trailing data"):
        decode(reframe(fields, body + b"x"))


def test_absurd_declared_shape_rejected_before_allocation():
    p = reframe([MAGIC, 1, 0, 1, 8, 65535, 65535, 65535, 0.0, 1.0], zlib.compress(b"\0" * 10))
    with pytest.raises(PayloadError, match="exceeds the limit"):
        decode(p)
    assert 65535 ** 3 > MAX_VALUES


@pytest.mark.parametrize("name,compress", [("zlib", zlib.compress), ("lzma", lzma.compress),
                                           ("zstd", lambda b: __import__("zstandard").compress(b))])
def test_decompression_bomb_is_bounded(name, compress):
    ident = CODECS[name].ident
    bomb = compress(b"\0" * 50_000_000)  # 50 MB of zeros for a declared 1x1x8 feature map
    with pytest.raises(PayloadError, match="declares"):
        decode(reframe([MAGIC, 1, 0, ident, 8, 1, 1, 8, 0.0, 1.0], bomb))


def test_detections_roundtrip():
    dets = torch.tensor([[10.2, 20.7, 50.0, 80.4, 0.91, 0], [0, 0, 159, 159, 0.45, 3]])
    for codec in ENTROPY_CODECS:  # entropy codecs code feature maps only
        with pytest.raises(ValueError, match="codes feature maps"):
            encode_detections(dets, codec)
    for codec in set(CODECS) - set(ENTROPY_CODECS):
        d = decode(encode_detections(dets, codec)).detections
        assert d.shape == (2, 6)
        assert torch.allclose(d[:, :4], dets[:, :4].round())
        assert torch.allclose(d[:, 4], dets[:, 4], atol=1 / 65535)
        assert torch.equal(d[:, 5], dets[:, 5])
    empty = decode(encode_detections(torch.zeros(0, 6))).detections
    assert empty.shape == (0, 6)
