"""The learned bottleneck's parts (models/bottleneck.py): the rate estimate is what the coder spends, the latent
round-trips through the coder, the identity bottleneck reproduces the cut, and the rate term trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bottleneck import Bottleneck, FactorizedPrior


def peaked_latent(n=4, k=6, h=9, w=11, radius=7, seed=0):
    torch.manual_seed(seed)
    return torch.distributions.Laplace(0.0, 1.5).sample((n, k, h, w)).round().clamp(-radius, radius)


def test_the_rate_estimate_is_what_the_coder_spends():
    prior = FactorizedPrior(6, 7)
    with torch.no_grad():  # a prior close to the data's distribution, per channel
        q = peaked_latent()
        for c in range(6):
            hist = torch.bincount((q[:, c] + 7).long().flatten(), minlength=15).float() + 0.5
            prior.logits[c] = hist.log()
    model = prior.entropy_model()
    assert model.bits == prior.bits == 4 and model.channels == 6
    for x in q:
        est = float(prior.rate_bits(x[None]).detach())
        body = model.encode((x + 7).to(torch.uint8).numpy())
        spent = 8 * (len(body) - 4)  # the coder's words, without the model CRC
        assert est <= spent <= est * 1.03 + 64, (est, spent)  # within a few percent (+ the final state word)


def test_the_latent_round_trips_through_the_coder_and_the_decoder():
    torch.manual_seed(0)
    b = Bottleneck(8, 3, 15).eval()
    x = torch.randn(2, 8, 7, 5) * 4
    model = b.prior.entropy_model()
    with torch.no_grad():
        ref, _ = b(x)
        for i in range(2):
            codes = b.codes(x[i:i + 1])[0].numpy()
            back = model.decode(model.encode(codes), codes.shape)
            assert np.array_equal(back, codes)
            assert torch.allclose(b.decode_codes(torch.from_numpy(back)[None]), ref[i:i + 1], atol=1e-5)


def test_the_identity_bottleneck_reproduces_the_cut_to_half_a_level():
    scale, radius = 8.0, 127
    b = Bottleneck.identity(5, radius, scale).eval()
    x = (torch.rand(3, 5, 6, 6) * 2 - 1) * (radius / scale) * 0.99
    with torch.no_grad():
        y, rate = b(x)
    assert float((y - x).abs().max()) <= 0.5 / scale + 1e-6
    assert float(rate) > 0
    with pytest.raises(ValueError, match="radius"):
        FactorizedPrior(4, 0)


def trained(lam: float) -> tuple[float, float, float, float]:
    """(bits before, bits after, distortion before, after) of 60 Adam steps on distortion + lam x bits per value."""
    torch.manual_seed(0)
    b = Bottleneck(4, 4, 15)
    x = torch.randn(8, 4, 6, 6) * 3
    opt = torch.optim.Adam(b.parameters(), lr=0.05)
    with torch.no_grad():
        y0, r0 = b.eval()(x)
    b.train()
    for _ in range(60):
        y, rate = b(x)
        loss = ((y - x) ** 2).mean() + lam * rate / x.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert b.encoder.weight.grad is not None and b.prior.logits.grad is not None
    with torch.no_grad():
        y1, r1 = b.eval()(x)
    return float(r0), float(r1), float(((y0 - x) ** 2).mean()), float(((y1 - x) ** 2).mean())


def test_the_rate_term_trades_bits_for_distortion():
    """The rate reaches the encoder and the prior through its gradient: a larger lam gives fewer bits and more
    distortion (measured: lam 0 -> 4,494 bits at MSE 0.09; lam 5 -> 1,712 bits at MSE 2.1; from 3,271 at 9.8)."""
    free, tight = trained(0.0), trained(5.0)
    assert free[3] < 0.1 * free[2] and tight[3] < free[2]  # both learn to reconstruct
    assert tight[1] < 0.5 * free[1] and tight[1] < free[0]  # the rate term cuts the bits
    assert tight[3] > free[3]  # at a price in distortion
