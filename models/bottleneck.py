"""A learned bottleneck at the cut: an interface (like :class:`models.interface.QuantInterface`) that the node and
the edge share, trained to be transmitted (Ballé et al.'s factorized entropy model; the "supervised compression"
of Matsubara et al. / sc2bench).

The node-side encoder (a conv, C -> k channels) maps the cut tensor to a latent; the latent is rounded to
integers in ``[-2**(b-1), 2**(b-1) - 1]`` - exactly a :class:`QuantInterface` of ``b`` bits with ``mu = -1/2``,
``max = 2**(b-1)`` (step 1) and midpoint reconstruction, so the codes, the framing, the payload and the deploy
runtime are those of any b-bit cut - and coded with a learned *factorized prior* (one discrete distribution per
latent channel over the ``2**b`` codes); the edge-side decoder (a conv, k -> C) maps it back to the cut's shape.

In training the rounding is replaced by additive uniform noise (:attr:`BottleneckInterface.noise`, the usual
differentiable proxy) or passed straight through (the fine-tuning that follows, which sees what is sent); the rate
is the prior's code length of the latent, linearly interpolated between integers so it is differentiable in the
latent and in the prior. The prior becomes rANS tables with :meth:`FactorizedPrior.entropy_model`
(:mod:`models.entropy`, ``ans``: one table per channel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.entropy import TABLE_BITS, EntropyModel
from models.entropy_fit import quantize_rows
from models.interface import QuantInterface


class FactorizedPrior(nn.Module):
    """One learned categorical distribution per latent channel over the ``2**bits`` integers
    ``-2**(bits-1) .. 2**(bits-1) - 1`` (code = integer + ``2**(bits-1)``)."""

    def __init__(self, channels: int, bits: int) -> None:
        super().__init__()
        if channels < 1 or not 1 <= bits <= 8:
            raise ValueError(f"factorized prior: channels={channels} must be >= 1 and bits={bits} in 1..8")
        self.bits = bits
        self.half = 2 ** (bits - 1)
        x = torch.arange(-self.half, self.half, dtype=torch.float32)
        self.logits = nn.Parameter(-(x.abs() / 2).expand(channels, -1).clone())  # a Laplacian-like start

    def log2_probs(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, -1) / math.log(2)

    def rate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """Code length in bits of latents ``y`` (N, k, H, W) under the prior, summed: at an integer exactly the
        prior's -log2 p (what the coder spends, see :meth:`entropy_model`); between two integers the linear
        interpolation of theirs, so the rate is differentiable in the latent (training, noisy ``y``) and in the
        prior."""
        top = 2 * self.half - 1
        y = y.clamp(-self.half, self.half - 1) + self.half
        lp = self.log2_probs()  # (k, L)
        lo = y.detach().floor().clamp(max=top - 1)
        t = y - lo
        ch = torch.arange(lp.shape[0], device=y.device)[None, :, None, None]
        lo = lo.long()
        return -((1 - t) * lp[ch, lo] + t * lp[ch, lo + 1]).sum()

    def entropy_model(self) -> EntropyModel:
        """The prior as ``ans`` tables (16-bit frequencies, every code >= 1; codes are ``q + 2**(bits-1)``)."""
        p = torch.softmax(self.logits.detach().double(), -1).cpu().numpy()
        counts = p[:, None, :] * (1 << TABLE_BITS)  # quantize_rows adds its pseudo-count: every code >= 1
        c = p.shape[0]
        return EntropyModel("ans", self.bits, np.arange(c), np.full(c, -1), np.arange(c), quantize_rows(counts),
                            np.zeros(2 ** self.bits, dtype=np.uint8))


class Affine(nn.Module):
    """``x * scale + shift`` per channel, fixed (buffers): the bottleneck standardizes the cut tensor before its
    encoder conv and undoes it after its decoder conv, so the convs' weights are of order one whatever the cut's
    range (Adam's steps are absolute: a decoder whose weights had to be 1e-3 would not train at lr 1e-3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(1, channels, 1, 1))
        self.register_buffer("shift", torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class BottleneckInterface(nn.Module):
    """Encoder (standardize, conv C -> k with stride s) | b-bit integer latent with a factorized prior | decoder
    (conv k -> s*s*C, depth-to-space by s, de-standardize).

    The interface contract of :class:`QuantInterface`: ``quantize`` (node: cut tensor -> uint8 codes of the latent),
    ``dequantize`` (edge: codes -> the reconstructed cut tensor), ``forward`` (training: noise or straight-through),
    ``bits`` / ``mu`` / ``max`` / ``recon`` of the latent's quantizer (what a bundle's runtime applies to the
    output of ``node.onnx``, which then ends in the encoder) and ``entropy`` (codec name -> model; ``ans`` is the
    learned prior). ``identity(channels, bits, scale)`` builds one whose decoder undoes its encoder exactly.
    """

    def __init__(self, channels: int, latent: int, bits: int, kernel: int = 1, stride: int = 1) -> None:
        super().__init__()
        if latent < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"bottleneck: latent={latent} must be >= 1 and kernel={kernel} odd")
        if stride < 1 or (stride > 1 and kernel < stride):
            raise ValueError(f"bottleneck: stride={stride} must be >= 1 and at most the kernel ({kernel}), or the "
                             "encoder skips pixels")
        self.channels, self.latent_channels, self.kernel, self.stride = channels, latent, kernel, stride
        self.encoder = nn.Sequential(Affine(channels), nn.Conv2d(channels, latent, kernel, stride, kernel // 2))
        # the decoder: a conv to stride**2 x C channels, then depth-to-space (ONNX DepthToSpace) back to the cut's size
        up = [nn.PixelShuffle(stride)] if stride > 1 else []
        self.decoder = nn.Sequential(nn.Conv2d(latent, channels * stride ** 2, kernel, padding=kernel // 2), *up,
                                     Affine(channels))
        self.prior = FactorizedPrior(latent, bits)
        self.wire = QuantInterface(bits=bits, recon="midpoint")
        self.wire.set_range(-0.5, float(2 ** (bits - 1)))  # step 1: codes = floor(y + 1/2) + 2**(b-1)
        self.noise = False  # training with additive uniform noise (the first stage) instead of straight-through
        self.entropy: dict = {}

    @classmethod
    def identity(cls, channels: int, bits: int, scale: float) -> BottleneckInterface:
        b = cls(channels, channels, bits)
        with torch.no_grad():
            eye = torch.eye(channels)[:, :, None, None]
            b.encoder[1].weight.copy_(eye * scale)
            b.encoder[1].bias.zero_()
            b.decoder[0].weight.copy_(eye / scale)
            b.decoder[0].bias.zero_()
        return b

    @torch.no_grad()
    def standardize(self, features: torch.Tensor, levels: float) -> None:
        """Start from ``features`` (N, C, H, W, the cut tensor): the encoder standardizes them per channel and its
        conv is scaled so the latent's standard deviation is ``levels`` integer levels; the decoder starts at
        zero, i.e. at every channel's mean (a relative distortion of 1 per channel)."""
        mean = features.mean((0, 2, 3), keepdim=True)
        std = features.std((0, 2, 3), keepdim=True).clamp(min=1e-6)
        self.encoder[0].scale.copy_(1 / std)
        self.encoder[0].shift.copy_(-mean / std)
        self.decoder[-1].scale.copy_(std)
        self.decoder[-1].shift.copy_(mean)
        conv = self.encoder[1]
        k = levels / max(float(self.encoder(features).std()), 1e-12)
        conv.weight.mul_(k)
        conv.bias.mul_(k)
        self.decoder[0].weight.zero_()
        self.decoder[0].bias.zero_()

    def spec(self) -> dict[str, int]:
        """What rebuilds it (beside its state dict): :meth:`from_spec`."""
        return {"channels": self.channels, "latent": self.latent_channels, "bits": self.bits, "kernel": self.kernel,
                "stride": self.stride}

    @classmethod
    def from_spec(cls, d: dict) -> BottleneckInterface:
        """``d``: a :meth:`spec` (one stored before strides existed has none: stride 1)."""
        return cls(int(d["channels"]), int(d["latent"]), int(d["bits"]), int(d["kernel"]), int(d.get("stride", 1)))

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(k, H / s, W / s): the latent sent for a cut tensor of ``height`` x ``width``."""
        return self.latent_channels, height // self.stride, width // self.stride

    @property
    def bits(self) -> int:
        return self.wire.bits

    @property
    def mu(self) -> torch.Tensor:
        return self.wire.mu

    @property
    def max(self) -> torch.Tensor:
        return self.wire.max

    @property
    def recon(self) -> str:
        return self.wire.recon

    @property
    def enabled(self) -> bool:
        return True

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """Node side: the integer latent that is sent (the wire's round-and-clamp of the encoder's output)."""
        return self.wire.dequantize(self.wire.quantize(self.encoder(x)))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Node side: cut tensor -> the latent's uint8 codes (N, k, H, W), what :meth:`FactorizedPrior.entropy_model`
        codes."""
        return self.wire.quantize(self.encoder(x))

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Edge side: codes -> the reconstructed cut tensor."""
        return self.decoder(self.wire.dequantize(codes))

    def rate_bits(self, x: torch.Tensor) -> torch.Tensor:
        """The prior's code length in bits of what :meth:`quantize` sends for ``x`` (summed over the batch)."""
        return self.prior.rate_bits(self.latent(x))

    def code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstructed cut, rate in bits summed over the batch): noise in place of rounding while
        :attr:`noise` and training, straight-through rounding otherwise in training, rounding in evaluation."""
        y = self.encoder(x)
        lo, hi = -self.prior.half, self.prior.half - 1
        if self.training and self.noise:
            q = (y + torch.empty_like(y).uniform_(-0.5, 0.5)).clamp(lo, hi)
        else:
            r = self.wire.dequantize(self.wire.quantize(y))
            q = y + (r - y).detach() if self.training else r
        return self.decoder(q), self.prior.rate_bits(q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.code(x)[0]

    def macs(self, height: int, width: int) -> tuple[int, int]:
        """(encoder MACs on the node, decoder MACs on the edge) for one cut tensor of ``height`` x ``width``: both convs
        run at the latent's H / s x W / s positions, the decoder's with s*s x C outputs."""
        _, h, w = self.latent_shape(height, width)
        enc = self.channels * self.latent_channels * self.kernel ** 2 * h * w
        return enc, enc * self.stride ** 2
