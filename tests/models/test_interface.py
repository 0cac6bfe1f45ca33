from __future__ import annotations

import pytest
import torch

from models import QuantInterface, calibrate, split


def calibrated(bits, data, midpoint=False):
    q = QuantInterface(bits, midpoint=midpoint)
    calibrate(q, [data])
    return q


def test_calibration_mean_and_range_over_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 8, 5, 5, generator=g) * 3 + 1 for _ in range(3)]
    q = QuantInterface(4)
    mu, mx = calibrate(q, lambda: iter(batches))  # a callable gives a fresh iterator per pass
    allv = torch.cat([b.flatten() for b in batches]).double()
    assert mu == pytest.approx(allv.mean().item(), rel=1e-9)
    assert mx == pytest.approx((allv - allv.mean()).abs().max().item(), rel=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_calibration_range_equals_the_float64_reference_and_ignores_the_layout(channels_last):
    """max = max |f - mu| and the percentile over the evenly strided sample of |f - mu| (float64), as Eq. 5 asks,
    for NCHW and channels-last features alike (the sample follows the logical NCHW order)."""
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(3, 6, 7, 9, generator=g) * 2 - 0.5 for _ in range(2)]
    if channels_last:
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    allv = torch.cat([b.reshape(-1) for b in batches]).double()
    mu = allv.mean().item()
    dev = (allv - mu).abs()
    _, mx = calibrate(QuantInterface(4), batches)
    assert mx == pytest.approx(dev.max().item(), rel=1e-6)
    _, p99 = calibrate(QuantInterface(4), batches, percentile=99.0, sample_limit=300)
    stride = len(allv) // 300
    sample = torch.cat([(b.reshape(-1)[::stride].double() - mu).abs() for b in batches]).float()
    k = int(round(len(sample) * 0.99))
    assert p99 == pytest.approx(float(sample.kthvalue(k).values), rel=1e-6)
    assert p99 < mx


def test_one_bit_gives_exactly_two_levels_eq5_eq6():
    f = torch.randn(2, 16, 9, 9)
    q = calibrated(1, f)
    codes = q.quantize(f)
    assert set(codes.unique().tolist()) == {0, 1}
    # Eq. 5: d = floor((f - mu) / max) in {-1, 0}; Eq. 6: f' = d * max + mu
    d = torch.floor((f - q.mu) / q.max).clamp(-1, 0)
    assert torch.equal(codes.long() - 1, d.long())
    rec = q.dequantize(codes)
    assert torch.allclose(rec.unique(), torch.stack([q.mu - q.max, q.mu]))


@pytest.mark.parametrize("bits", range(1, 9))
def test_levels_and_error_within_one_step(bits):
    f = torch.linspace(-2, 5, 20000).view(1, 1, 100, 200)
    q = calibrated(bits, f)
    codes = q.quantize(f)
    assert codes.max() <= 2 ** bits - 1
    assert codes.unique().numel() == 2 ** bits  # the calibrated range uses every level
    err = (q.dequantize(codes) - f).abs().max().item()
    assert err <= q.step.item() * (1 + 1e-5)
    q_mid = calibrated(bits, f, midpoint=True)
    assert (q_mid.dequantize(q_mid.quantize(f)) - f).abs().max().item() <= q.step.item() / 2 * (1 + 1e-4) + 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_eight_bit_reconstruction_error_within_step(seed):
    f = torch.randn(4, 32, 13, 13, generator=torch.Generator().manual_seed(seed))
    q = calibrated(8, f)
    err = (q(f) - f).abs()
    # Eq. 6 reconstructs at the bin's lower edge: at most one step off (reached only by the calibrated max,
    # which falls on the top edge of the last bin), and below one step everywhere else
    assert err.max() <= q.step + 1e-5  # float32 rounding of f + (q - f)
    assert (err < q.step * (1 - 1e-6)).float().mean() > 0.999


@pytest.mark.parametrize("bits", [0, 9, 2.5])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        QuantInterface(bits)


def test_straight_through_gradient_reaches_node_layers(small_model):
    sm = split(small_model, 3, bits=1).train()
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        calibrate(sm.interface, [sm.node(x)])
    loss = sum(h.square().mean() for h in sm(x))
    loss.backward()
    for i in (0, 2, 4):
        g = sm.layer(i).conv.weight.grad
        assert g is not None and g.abs().sum() > 0, f"node layer {i} got no gradient"
    # and the forward really is quantized: the edge sees only two distinct values
    assert sm.interface(sm.node(x)).unique().numel() == 2


def test_image_interface_is_lossless_for_8bit_images(small_model):
    sm = split(small_model, 0)
    x = torch.randint(0, 256, (2, 3, 160, 160)).float() / 255
    assert torch.equal(sm.interface.dequantize(sm.interface.quantize(x)), x)


@pytest.mark.parametrize("bits", [1, 3])
def test_centroid_reconstruction_is_the_bin_mean(bits):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 8, 6, 6, generator=g).abs() ** 2  # skewed, like post-activation features
    q = QuantInterface(bits, recon="centroid")
    calibrate(q, [f])
    codes = q.quantize(f)
    rec = q.dequantize(codes)
    for c in codes.unique():
        m = codes == c
        assert torch.allclose(rec[m], f[m].mean().expand(int(m.sum())), atol=1e-5)
    # better than Eq. 6 on the same codes
    paper = QuantInterface(bits)
    calibrate(paper, [f])
    assert torch.equal(paper.quantize(f), codes)
    assert (rec - f).square().mean() < (paper.dequantize(codes) - f).square().mean()
    with pytest.raises(ValueError, match="recon"):
        QuantInterface(1, recon="magic")


def test_percentile_range_ignores_outliers():
    f = torch.cat([torch.linspace(-1, 1, 10_000), torch.tensor([1000.0])]).view(1, 1, 1, -1)
    q_max, q_pct = QuantInterface(4), QuantInterface(4)
    calibrate(q_max, [f])
    calibrate(q_pct, [f], percentile=99.0)
    assert float(q_max.max) > 999  # Eq. 5's max: the outlier sets the range
    assert 0.9 < float(q_pct.max) < 1.15  # the 99th percentile of |f - mu| (mu is 0.1 here)
    bulk = f[..., :-1]
    assert q_pct.quantize(bulk).unique().numel() > 10 and q_max.quantize(bulk).unique().numel() <= 2
    with pytest.raises(ValueError, match="percentile"):
        calibrate(QuantInterface(2), [f], percentile=0)
