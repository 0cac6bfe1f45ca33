"""A learned bottleneck at the cut (issue #25, in progress: the module and its coding, not yet an option of the search).

The node-side encoder maps the cut tensor (C channels) to ``k`` latent channels, the latent is quantized to integers
in ``[-radius, radius]`` and coded with a learned *factorized prior* (one discrete distribution per latent channel,
as in Ballé et al.'s factorized entropy model); the edge-side decoder maps it back to C channels. In training the
rounding is replaced by additive uniform noise (the usual differentiable proxy) and the rate is the prior's code
length of the noisy latent's nearest integers; in evaluation the latent is rounded and clamped, exactly what is
sent. The prior becomes rANS tables with :meth:`FactorizedPrior.entropy_model` (:mod:`models.entropy`, ``ans``:
one table per channel), so a latent is framed and coded like any b-bit code map.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.entropy import TABLE_BITS, EntropyModel
from models.entropy_fit import quantize_rows


class FactorizedPrior(nn.Module):
    """One learned categorical distribution per latent channel over the integers ``-radius .. radius``."""

    def __init__(self, channels: int, radius: int) -> None:
        super().__init__()
        if channels < 1 or not 1 <= radius <= 127:
            raise ValueError(f"factorized prior: channels={channels} must be >= 1 and radius={radius} in 1..127")
        self.radius = radius
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        self.logits = nn.Parameter(-(x.abs() / 2).expand(channels, -1).clone())  # a Laplacian-like start

    @property
    def bits(self) -> int:
        """The code width that holds ``2 * radius + 1`` levels."""
        return max(1, math.ceil(math.log2(2 * self.radius + 1)))

    def log2_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, -1) / math.log(2)

    def rate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """Code length in bits of latents ``y`` (N, k, H, W) under the prior, summed: at an integer exactly the
        prior's -log2 p (what the coder spends, see :meth:`entropy_model`); between two integers the linear
        interpolation of theirs, so the rate is differentiable in the latent (training, noisy ``y``) and in the
        prior."""
        r = self.radius
        y = y.clamp(-r, r) + r
        lo = y.detach().floor().clamp(max=2 * r - 1)
        t = y - lo
        lp = self.log2_probs()  # (k, L)
        ch = torch.arange(lp.shape[0], device=y.device)[None, :, None, None]
        lo = lo.long()
        return -((1 - t) * lp[ch, lo] + t * lp[ch, lo + 1]).sum()

    def entropy_model(self) -> EntropyModel:
        """The prior as ``ans`` tables (16-bit frequencies, every code >= 1): the codes are ``q + radius`` at
        :attr:`bits` bits; codes beyond ``2 * radius`` (padding to a power of two) get the smallest frequency."""
        levels = 2 ** self.bits
        p = torch.softmax(self.logits.detach().double(), -1).cpu().numpy()
        counts = np.zeros((p.shape[0], 1, levels))
        counts[:, 0, :p.shape[1]] = p * (1 << TABLE_BITS)  # quantize_rows adds its pseudo-count: every code >= 1
        c = p.shape[0]
        return EntropyModel("ans", self.bits, np.arange(c), np.full(c, -1), np.arange(c), quantize_rows(counts),
                            np.zeros(levels, dtype=np.uint8))


class Bottleneck(nn.Module):
    """Encoder (conv, C -> k), integer quantization with a factorized prior, decoder (conv, k -> C); 1x1 by default.

    ``identity(channels, radius, scale)`` builds one whose decoder undoes its encoder exactly: with ``scale``
    levels per unit of the cut's values it reproduces the cut up to half a level (the split model then equals
    the unsplit one where the cut's range fits ``radius / scale``)."""

    def __init__(self, channels: int, latent: int, radius: int, kernel: int = 1) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(channels, latent, kernel, padding=kernel // 2)
        self.decoder = nn.Conv2d(latent, channels, kernel, padding=kernel // 2)
        self.prior = FactorizedPrior(latent, radius)

    @classmethod
    def identity(cls, channels: int, radius: int, scale: float) -> Bottleneck:
        b = cls(channels, channels, radius)
        with torch.no_grad():
            eye = torch.eye(channels)[:, :, None, None]
            b.encoder.weight.copy_(eye * scale)
            b.encoder.bias.zero_()
            b.decoder.weight.copy_(eye / scale)
            b.decoder.bias.zero_()
        return b

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """Node side: the integer latent that is sent (rounded, clamped)."""
        r = self.prior.radius
        return self.encoder(x).round().clamp(-r, r)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The latent as uint8 codes ``q + radius`` (N, k, H, W), what :meth:`FactorizedPrior.entropy_model` codes."""
        return (self.latent(x) + self.prior.radius).to(torch.uint8)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Edge side: codes -> the reconstructed cut tensor."""
        return self.decoder(codes.float() - self.prior.radius)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstructed cut, rate in bits summed over the batch). Training: uniform noise in place of rounding."""
        y = self.encoder(x)
        r = self.prior.radius
        if self.training:
            q = (y + torch.empty_like(y).uniform_(-0.5, 0.5)).clamp(-r, r)
        else:
            q = y.round().clamp(-r, r)
        return self.decoder(q), self.prior.rate_bits(q)
