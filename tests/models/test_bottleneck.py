"""The learned bottleneck (models/bottleneck.py): the rate estimate is what the coder spends, the latent round-trips
through the coder and the decoder, the identity bottleneck reproduces the cut, and the rate term trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bottleneck import BottleneckInterface, FactorizedPrior


def peaked_latent(n=4, k=6, h=9, w=11, seed=0):
    torch.manual_seed(seed)
    return torch.distributions.Laplace(0.0, 1.5).sample((n, k, h, w)).round().clamp(-8, 7)


def test_the_rate_estimate_is_what_the_coder_spends():
    prior = FactorizedPrior(6, 4)
    with torch.no_grad():  # a prior close to the data's distribution, per channel
        q = peaked_latent()
        for c in range(6):
            hist = torch.bincount((q[:, c] + 8).long().flatten(), minlength=16).float() + 0.5
            prior.logits[c] = hist.log()
    model = prior.entropy_model()
    assert model.bits == prior.bits == 4 and model.channels == 6
    for x in q:
        est = float(prior.rate_bits(x[None]).detach())
        body = model.encode((x + 8).to(torch.uint8).numpy())
        spent = 8 * (len(body) - 4)  # the coder's words, without the model CRC
        assert est <= spent <= est * 1.03 + 64, (est, spent)  # within a few percent (+ the final state word)


def test_the_latent_round_trips_through_the_coder_and_the_decoder():
    torch.manual_seed(0)
    b = BottleneckInterface(8, 3, 5, kernel=3).eval()
    x = torch.randn(2, 8, 7, 5) * 4
    model = b.prior.entropy_model()
    with torch.no_grad():
        ref = b(x)
        lat = b.latent(x)
        assert float(lat.min()) >= -16 and float(lat.max()) <= 15 and torch.equal(lat, lat.round())
        assert torch.equal(b.quantize(x).long() - 16, lat.long())  # codes = integer + 2**(bits-1)
        for i in range(2):
            codes = b.quantize(x[i:i + 1])[0].numpy()
            back = model.decode(model.encode(codes), codes.shape)
            assert np.array_equal(back, codes)
            assert torch.allclose(b.dequantize(torch.from_numpy(back)[None]), ref[i:i + 1], atol=1e-5)


def test_the_identity_bottleneck_reproduces_the_cut_to_half_a_level():
    scale, bits = 8.0, 8
    b = BottleneckInterface.identity(5, bits, scale).eval()
    x = (torch.rand(3, 5, 6, 6) * 2 - 1) * (127 / scale) * 0.99
    with torch.no_grad():
        y, rate = b.code(x)
    assert float((y - x).abs().max()) <= 0.5 / scale + 1e-6
    assert float(rate) > 0
    with pytest.raises(ValueError, match="bits"):
        FactorizedPrior(4, 0)
    with pytest.raises(ValueError, match="kernel"):
        BottleneckInterface(4, 2, 5, kernel=2)


def test_the_spec_rebuilds_the_same_bottleneck():
    torch.manual_seed(1)
    b = BottleneckInterface(6, 2, 4, kernel=3).eval()
    c = BottleneckInterface.from_spec(b.spec())
    c.load_state_dict(b.state_dict())
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        assert torch.equal(b.quantize(x), c.quantize(x)) and torch.equal(b(x), c.eval()(x))
    assert b.macs(5, 5) == (6 * 2 * 9 * 25, 6 * 2 * 9 * 25)


def test_a_strided_bottleneck_sends_a_smaller_latent_and_restores_the_cut_size():
    torch.manual_seed(2)
    b = BottleneckInterface(8, 4, 5, kernel=3, stride=2).eval()
    x = torch.randn(2, 8, 16, 12)
    with torch.no_grad():
        codes = b.quantize(x)
        assert codes.shape == (2, 4, 8, 6) == (2, *b.latent_shape(16, 12))
        assert b.dequantize(codes).shape == x.shape and torch.allclose(b.dequantize(codes), b(x), atol=1e-6)
        model = b.prior.entropy_model()
        assert np.array_equal(model.decode(model.encode(codes[0].numpy()), (4, 8, 6)), codes[0].numpy())
    # both convs run at the 8 x 6 latent positions; the decoder's has 2*2 x 8 outputs
    assert b.macs(16, 12) == (8 * 4 * 9 * 48, 8 * 4 * 9 * 48 * 4)
    c = BottleneckInterface.from_spec(b.spec())
    c.load_state_dict(b.state_dict())
    with torch.no_grad():
        assert c.stride == 2 and torch.equal(c.eval()(x), b(x))
    old = {k: v for k, v in b.spec().items() if k != "stride"}  # a spec stored before strides existed
    assert BottleneckInterface.from_spec({**old, "channels": 8}).stride == 1
    with pytest.raises(ValueError, match="stride"):
        BottleneckInterface(8, 4, 5, kernel=3, stride=4)  # the encoder would skip pixels


def test_a_strided_bottleneck_exports_to_onnx_and_runs_the_same_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    from search.deploy.bundle import _export

    torch.manual_seed(3)
    b = BottleneckInterface(6, 3, 5, kernel=5, stride=4).eval()
    x = torch.randn(1, 6, 20, 20)
    for name, part, inp in (("enc", b.encoder, x), ("dec", b.decoder, torch.randn(1, 3, 5, 5))):
        path = tmp_path / f"{name}.onnx"
        _export(part, inp, path, "x", ["y"])  # as the deploy bundle exports (dynamo, onnx.checker)
        got = ort.InferenceSession(str(path)).run(None, {"x": inp.numpy()})[0]
        with torch.no_grad():
            want = part(inp).numpy()
        assert got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5)


def trained(lam: float) -> tuple[float, float, float, float]:
    """(bits before, bits after, distortion before, after) of 60 Adam steps on distortion + lam x bits per value."""
    torch.manual_seed(0)
    b = BottleneckInterface(4, 4, 5)
    b.noise = True
    x = torch.randn(8, 4, 6, 6) * 3
    opt = torch.optim.Adam(b.parameters(), lr=0.05)
    with torch.no_grad():
        y0, r0 = b.eval().code(x)
    b.train()
    for _ in range(60):
        y, rate = b.code(x)
        loss = ((y - x) ** 2).mean() + lam * rate / x.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert b.encoder[1].weight.grad is not None and b.prior.logits.grad is not None
    with torch.no_grad():
        y1, r1 = b.eval().code(x)
    return float(r0), float(r1), float(((y0 - x) ** 2).mean()), float(((y1 - x) ** 2).mean())


def test_the_rate_term_trades_bits_for_distortion():
    """The rate reaches the encoder and the prior through its gradient: a larger lam gives fewer bits and more
    distortion (measured: lam 0 -> 4,494 bits at MSE 0.09; lam 5 -> 1,719 bits at MSE 2.1; from 3,271 at 9.8)."""
    free, tight = trained(0.0), trained(5.0)
    assert free[3] < 0.1 * free[2] and tight[3] < free[2]  # both learn to reconstruct
    assert tight[1] < 0.5 * free[1] and tight[1] < free[0]  # the rate term cuts the bits
    assert tight[3] > free[3]  # at a price in distortion
