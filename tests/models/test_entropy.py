"""The entropy-coded cut (models.entropy): exact round trips for every bit width and shape, the stream a README
implementation produces, fitting (Chow-Liu parents, shared tables, the context model beating order-0), payload
framing and hostile bodies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.codec import HEADER_BYTES, PayloadError, decode, encode_features, packed_nbytes
from models.entropy import KINDS, EntropyError, EntropyModel, contexts, wave_order
from models.entropy_fit import fit
from tests.helpers import readme_entropy_body


def smooth_codes(n: int, c: int, h: int, w: int, bits: int, seed: int = 0) -> np.ndarray:
    """Codes of smooth, channel-correlated fields (like a feature map): a shared blurred field per image, each
    channel a noisy, offset copy of it, quantized to ``bits``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1, h, w))
    for _ in range(3):  # blur
        base = (base + np.roll(base, 1, -1) + np.roll(base, 1, -2) + np.roll(base, (1, 1), (-2, -1))) / 4
    f = base + 0.3 * rng.normal(size=(n, c, 1, 1)) + 0.05 * rng.normal(size=(n, c, h, w))
    f = (f - f.min()) / (f.max() - f.min() + 1e-9)
    return np.minimum(np.floor(f * 2 ** bits), 2 ** bits - 1).astype(np.uint8)


SHAPES = [(1, 1, 1), (1, 5, 7), (3, 1, 9), (4, 6, 5), (9, 8, 8)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip_is_exact_for_every_bit_width_and_shape(kind, bits):
    for c, h, w in SHAPES:
        train = smooth_codes(6, c, h, w, bits, seed=bits)
        model = fit(train, bits, kind)
        for codes in [*smooth_codes(3, c, h, w, bits, seed=100 + bits),
                      np.zeros((c, h, w), np.uint8), np.full((c, h, w), 2 ** bits - 1, np.uint8),
                      np.random.default_rng(bits).integers(0, 2 ** bits, (c, h, w), dtype=np.uint8)]:
            body = model.encode(codes)
            assert np.array_equal(model.decode(body, (c, h, w)), codes), (kind, bits, (c, h, w))
            assert len(body) % 4 == 0 and len(body) <= model.max_body_bytes(c * h * w)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_a_readme_implementation_gives_the_same_bytes(kind, bits):
    """The stream as the bundle README describes it (pure Python from interface.json's model) equals the encoder's."""
    train = smooth_codes(5, 4, 6, 7, bits)
    model = fit(train, bits, kind)
    spec = model.to_json()
    for codes in smooth_codes(3, 4, 6, 7, bits, seed=7):
        assert readme_entropy_body(codes, spec) == model.encode(codes)


def test_model_record_round_trips_and_refuses_tampering():
    model = fit(smooth_codes(4, 6, 5, 5, 2), 2, "ans_ctx")
    d = model.to_json()
    again = EntropyModel.from_json(d)
    assert again.crc32 == model.crc32 and np.array_equal(again.cum, model.cum)
    codes = smooth_codes(1, 6, 5, 5, 2, seed=3)[0]
    assert again.encode(codes) == model.encode(codes)
    with pytest.raises(EntropyError, match="does not match its tables"):
        EntropyModel.from_json({**d, "crc32": d["crc32"] ^ 1})
    with pytest.raises(EntropyError, match="malformed"):
        EntropyModel.from_json({k: v for k, v in d.items() if k != "order"})
    with pytest.raises(EntropyError, match="parent is not coded before it"):
        EntropyModel.from_json({**{k: v for k, v in d.items() if k != "crc32"}, "order": d["order"][::-1]})


def test_fitting_orders_parents_first_and_shares_tables_within_the_budget():
    codes = smooth_codes(8, 12, 6, 6, 2)
    m = fit(codes, 2, "ans_ctx")
    pos = {int(ch): k for k, ch in enumerate(m.order)}
    assert sorted(pos) == list(range(12)) and (m.parent < 0).sum() == 1
    assert all(pos[int(p)] < pos[c] for c, p in enumerate(m.parent) if p >= 0)
    rows = m.template.contexts * 4
    assert len(m.cum) == 12 and m.table_bytes == 12 * rows * 2 + 3 * 2 * 12 + 4
    small = fit(codes, 2, "ans_ctx", max_table_bytes=3 * rows * 2 + 6 * 12)
    assert len(small.cum) == 3 and sorted(set(small.group.tolist())) == [0, 1, 2]
    assert np.bincount(small.group).tolist() == [4, 4, 4]
    for codes_ in codes[:2]:
        assert np.array_equal(small.decode(small.encode(codes_), codes_.shape), codes_)
    # every table row sums to 2**16 and gives every symbol a frequency of at least 1
    assert (m.freq.sum(-1) == 65536).all() and (m.freq >= 1).all()


@pytest.mark.parametrize("bits", [1, 2])
def test_the_context_model_beats_order_zero_on_correlated_maps(bits):
    train, test = smooth_codes(40, 8, 16, 16, bits), smooth_codes(10, 8, 16, 16, bits, seed=9)
    ctx, o0 = fit(train, bits, "ans_ctx"), fit(train, bits, "ans")
    sizes = {k: np.mean([len(m.encode(c)) for c in test]) for k, m in (("ctx", ctx), ("o0", o0))}
    hist = np.bincount(test.ravel(), minlength=2 ** bits) / test.size
    hist = hist[hist > 0]
    order0 = -(hist * np.log2(hist)).sum() * test[0].size / 8  # the empirical order-0 entropy, bytes per map
    assert sizes["ctx"] < 0.7 * order0 and sizes["ctx"] < 0.7 * sizes["o0"], (sizes, order0)
    for m in (ctx, o0):  # the coder spends what its tables say, within the CRC, the final state and a word
        for c in test[:3]:
            ctxs = contexts(c, m.lut, m.template, m.parent)
            f = m.freq[m.group[:, None, None], ctxs, c.astype(np.int64)]
            ideal = -np.log2(f / 65536).sum() / 8
            assert ideal + 4 <= len(m.encode(c)) <= ideal + 4 + 12, (m.kind, ideal, len(m.encode(c)))


def test_wave_order_puts_every_template_neighbour_first():
    order, starts = wave_order(5, 7)
    rank = np.empty(35, dtype=int)
    rank[order] = np.arange(35)
    wave = np.repeat(np.arange(len(starts) - 1), np.diff(starts))[rank]  # wave of each flat position
    for y in range(5):
        for x in range(7):
            for dy, dx in [(0, 1), (1, 0), (1, 1), (1, -1), (0, 2)]:
                yy, xx = y - dy, x - dx
                if 0 <= yy < 5 and 0 <= xx < 7:
                    assert wave[yy * 7 + xx] < wave[y * 7 + x]


def test_payloads_frame_the_entropy_body_and_fall_back_to_none():
    codes = smooth_codes(10, 6, 9, 11, 2)
    model = fit(codes, 2, "ans_ctx")
    q = torch.from_numpy(codes[0])
    p = encode_features(q, 2, 0.5, 1.5, "ans_ctx", model=model)
    assert len(p) == HEADER_BYTES + len(model.encode(codes[0])) < HEADER_BYTES + packed_nbytes(q.numel(), 2)
    d = decode(p, models={"ans_ctx": model})
    assert d.codec == "ans_ctx" and torch.equal(d.codes, q) and (d.mu, d.max) == (0.5, 1.5)
    noise = np.random.default_rng(0).integers(0, 256, (6, 9, 11), dtype=np.uint8)
    m8 = fit(smooth_codes(4, 6, 9, 11, 8), 8, "ans")  # fitted on other data: noise costs more than 8 bits a code
    p8 = encode_features(torch.from_numpy(noise), 8, 0, 1, "ans", model=m8)
    assert decode(p8).codec == "none" and len(p8) == HEADER_BYTES + noise.size
    with pytest.raises(ValueError, match="needs the cut's ans_ctx entropy model at bits=2"):
        encode_features(q, 2, 0, 1, "ans_ctx")
    with pytest.raises(PayloadError, match="holds no ans_ctx entropy model"):
        decode(p)
    with pytest.raises(PayloadError, match="entropy model codes 1"):
        decode(p, models={"ans_ctx": fit(smooth_codes(2, 6, 9, 11, 1), 1, "ans_ctx")})


def test_hostile_bodies_are_refused_with_one_line():
    codes = smooth_codes(6, 5, 12, 12, 2)
    model = fit(codes, 2, "ans_ctx")
    body = model.encode(codes[0])
    shape = codes[0].shape
    rng = np.random.default_rng(0)
    refused = []

    def refuse(b, sh=shape):
        with pytest.raises(EntropyError) as e:
            model.decode(b, sh)
        assert "\n" not in str(e.value)
        refused.append(str(e.value))

    for n in range(0, len(body) - 1):  # every truncation (the CRC alone is the stream of a map of 0s: see below)
        if n != 4:
            refuse(body[:n])
    zeros = np.zeros(shape, np.uint8)
    # a coder starting at state 0 spends no word on symbols whose row starts at 0 (code 0): only the CRC is left
    assert model.encode(zeros) == body[:4] and np.array_equal(model.decode(body[:4], shape), zeros)
    for _ in range(200):  # bit flips in the coded words
        b = bytearray(body)
        k = int(rng.integers(32, 8 * len(b)))
        b[k // 8] ^= 1 << (k % 8)
        refuse(bytes(b))
    for _ in range(200):  # adversarial: the right model CRC, then random words
        words = rng.integers(1, 2 ** 32, int(rng.integers(1, len(body) // 4 * 3)), dtype=np.uint64).astype("<u4")
        refuse(body[:4] + words.tobytes())
    refuse(body[:4] + b"\xff" * (model.max_body_bytes(codes[0].size)))  # beyond the bound: refused unread
    refuse(body, (5, 12, 13))  # a shape other than the encoded one
    refuse(body, (4, 12, 12))
    other = fit(smooth_codes(6, 5, 12, 12, 2, seed=5), 2, "ans_ctx")
    with pytest.raises(EntropyError, match="coded with entropy model"):
        other.decode(body, shape)
    assert any("bound" in r for r in refused) and any("data left" in r for r in refused)
