"""Interface I (paper Eq. 2, 5, 6): b-bit quantization of the feature map at the partition point.

The node computes codes ``d = floor((f - mu) / s)`` with step ``s = max / 2**(b-1)``, clamped to the
``2**b`` levels ``[-2**(b-1), 2**(b-1) - 1]``; the edge reconstructs ``f' = (d + o) * s + mu``. With
``b = 1`` this is exactly Eq. 5 (``d = floor((f - mu) / max)`` in {-1, 0}) and, with ``o = 0``, Eq. 6
(``f' = d * max + mu``). ``midpoint=True`` sets ``o = 1/2`` (reconstruct at the centre of each bin), which
halves the worst-case error; it is an option, not the paper's formula.

``recon="centroid"`` keeps the node side (Eq. 5) and the payload as they are but lets the edge map each code to
the mean of the calibration values that fell in its bin (a Lloyd-style decoder table held by the edge model),
which removes the large bias that Eq. 6 puts on 1-bit codes of skewed activations.

``mu`` is the mean of the feature over the calibration data and ``max`` the largest ``|f - mu|`` seen there,
so the whole calibrated range maps onto the codes. In training the interface passes the gradient straight
through (``f + (f' - f).detach()``) so the node layers keep learning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class QuantInterface(nn.Module):
    """b-bit quantize (node) / de-quantize (edge) of one feature tensor.

    Args:
        bits: 1..8.
        midpoint: reconstruct at bin centres instead of Eq. 6's lower edge.
        enabled: when False, ``forward`` is the identity (the unsplit model's behaviour).
    """

    RECONSTRUCTIONS = ("paper", "midpoint", "centroid")

    def __init__(self, bits: int = 8, midpoint: bool = False, enabled: bool = True, recon: str | None = None) -> None:
        super().__init__()
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ValueError(f"bits={bits!r} must be an integer in 1..8")
        recon = recon or ("midpoint" if midpoint else "paper")
        if recon not in self.RECONSTRUCTIONS:
            raise ValueError(f"recon={recon!r} not in {list(self.RECONSTRUCTIONS)}")
        self.bits = bits
        self.recon = recon
        self.midpoint = recon == "midpoint"
        self.enabled = enabled
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("max", torch.ones(()))
        # per-code reconstruction values for recon="centroid" (mean of the calibration values in each bin)
        self.register_buffer("centroids", torch.zeros(2 ** bits))
        # entropy models of the codes by codec name (models.entropy), fitted after training (SplitModel.fit_entropy);
        # kept beside the state dict (search.deploy.store), not in it
        self.entropy: dict = {}

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, recon={self.recon}, enabled={self.enabled}, "
                f"mu={float(self.mu):.4g}, max={float(self.max):.4g}")

    @property
    def levels(self) -> int:
        return 2 ** self.bits

    @property
    def step(self) -> torch.Tensor:
        return self.max / 2 ** (self.bits - 1)

    def quantize(self, f: torch.Tensor) -> torch.Tensor:
        """Node side: float feature -> uint8 codes in ``0 .. 2**bits - 1``."""
        half = 2 ** (self.bits - 1)
        d = torch.floor((f.float() - self.mu) / self.step).clamp_(-half, half - 1)
        return (d + half).to(torch.uint8)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Edge side: uint8 codes -> float feature (Eq. 6, or the bin centroids)."""
        if self.recon == "centroid":
            return self.centroids.to(codes.device)[codes.long()]
        d = codes.float() - 2 ** (self.bits - 1)
        return (d + (0.5 if self.midpoint else 0.0)) * self.step + self.mu

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return f
        q = self.dequantize(self.quantize(f)).to(f.dtype)
        return f + (q - f).detach()  # straight-through estimator

    def set_range(self, mu: float, max_abs: float) -> None:
        if not max_abs > 0:
            raise ValueError(f"interface range max={max_abs} must be > 0")
        self.mu.fill_(float(mu))
        self.max.fill_(float(max_abs))


class ImageInterface(QuantInterface):
    """j = 0: the node sends the input image itself as 8-bit pixels (lossless for 8-bit sources), or coded with a
    lossy image codec (:mod:`models.image_codec`: ``codec`` and ``quality``), in which case the edge sees the
    decoded image - in training too, so a model fine-tuned here adapts to the codec's artefacts."""

    def __init__(self, enabled: bool = True, codec: str | None = None, quality: int = 0) -> None:
        super().__init__(bits=8, enabled=enabled)
        if codec is not None:
            from models.image_codec import get_image_codec

            quality = get_image_codec(codec).check_quality(quality)
        self.codec = codec
        self.quality = int(quality) if codec is not None else 0

    def extra_repr(self) -> str:
        return f"codec={self.codec or 'raw'}, quality={self.quality}, enabled={self.enabled}"

    def quantize(self, f: torch.Tensor) -> torch.Tensor:
        return torch.round(f.float().clamp(0, 1) * 255).to(torch.uint8)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() / 255

    def transmit(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 codes -> what the edge decodes (the same codes without a lossy codec)."""
        if self.codec is None:
            return codes
        from models.image_codec import roundtrip

        hwc = codes.detach().permute(0, 2, 3, 1).cpu().numpy()
        out = torch.from_numpy(roundtrip(hwc, self.codec, self.quality)).permute(0, 3, 1, 2)
        return out.to(codes.device)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return f
        q = self.dequantize(self.transmit(self.quantize(f))).to(f.dtype)
        return f + (q - f).detach()  # straight-through estimator


@torch.no_grad()
def calibrate(
    interface: QuantInterface,
    features: Iterable[torch.Tensor] | Callable[[], Iterable[torch.Tensor]],
    percentile: float = 100.0,
    sample_limit: int = 4_000_000,
) -> tuple[float, float]:
    """Set ``mu`` (mean) and ``max`` from features at the cut, in two passes (three for centroids).

    Args:
        interface: the interface to calibrate.
        features: the node outputs over the calibration set, or a callable returning a fresh iterable
            of them (needed for the later passes when the iterable is a one-shot generator).
        percentile: ``max`` is this percentile of ``|f - mu|``; 100 is the largest value (Eq. 5's "maximum of
            the dynamic range"). A lower one (e.g. 99.9) ignores outliers, so b > 1 bits resolve the bulk of
            the values; values beyond it fall into the end bins.
        sample_limit: values kept (evenly strided) to estimate a percentile below 100.

    Returns:
        (mu, max).
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile={percentile} must be in (0, 100]")
    get = features if callable(features) else (lambda: features)
    total, count = 0.0, 0
    for f in get():
        total += float(f.sum(dtype=torch.float64))
        count += f.numel()
    if count == 0:
        raise ValueError("interface calibration got no feature values (empty calibration data)")
    mu = total / count
    max_abs = 0.0
    stride = max(1, count // sample_limit)
    kept: list[torch.Tensor] = []
    for f in get():
        # max |f - mu| from the extremes: rounding x - mu (in float64) is monotonic in x, so this equals the maximum
        # over every value without a float64 copy of the features
        max_abs = max(max_abs, float(f.max()) - mu, mu - float(f.min()))
        if percentile < 100:
            kept.append((f.reshape(-1)[::stride].double() - mu).abs().float().cpu())
    if percentile < 100 and kept:
        sample = torch.cat(kept)
        k = max(1, min(len(sample), int(round(len(sample) * percentile / 100))))
        max_abs = float(sample.kthvalue(k).values)
    interface.set_range(mu, max_abs if max_abs > 0 else 1.0)
    if getattr(interface, "recon", None) == "centroid":
        n = interface.levels
        sums = torch.zeros(n, dtype=torch.float64)
        counts = torch.zeros(n, dtype=torch.float64)
        for f in get():
            codes = interface.quantize(f).flatten().long().cpu()
            sums += torch.bincount(codes, weights=f.flatten().double().cpu(), minlength=n)
            counts += torch.bincount(codes, minlength=n).double()
        # an empty bin keeps its Eq. 6 value (it is never produced by the calibration data)
        eq6 = (torch.arange(n, dtype=torch.float64) - n // 2) * float(interface.step) + mu
        interface.centroids.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), eq6).float())
    return mu, interface.max.item()
