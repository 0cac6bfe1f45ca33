"""The design point: one choice of every axis of the space, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from models.cut_points import CutTable


class PointFailed(RuntimeError):
    """A design point could not be measured (training diverged, a design table cannot answer it): its trial fails
    with this message as the reason and the study goes on."""


@dataclass(frozen=True)
class DesignPoint:
    """Where to cut (j), how to quantize (bits) and prune (keep ratios), which codec and radio.

    Attributes:
        j: partition point (an index of the model's cut-point table).
        bits: interface bits (ignored at j=0, which sends 8-bit pixels, and at the last j, which sends detections).
        cut_keep: share of the cut conv's channels kept (step 1); 1.0 = unpruned.
        layer_keep: (darknet conv, share kept) for the earlier node convs (step 2).
        criterion: pruning importance criterion.
        codec, radio: cost-only axes (profile names).
        image_codec, quality: where the node sends the image (``table[j].sends_image``): ``raw`` (8-bit pixels) or
            a lossy codec of :mod:`models.image_codec` at ``quality``. Unlike codec and radio these change what
            the edge sees, so they are part of the accuracy key.
        bottleneck, rate_lambda: where a feature map is cut, a learned bottleneck of ``bottleneck`` latent channels
            trained with rate weight ``rate_lambda`` in place of the b-bit quantizer (:mod:`models.bottleneck`);
            0: none. Such a point is unpruned, and ``bits`` is unused (``train.bottleneck.bits`` sets the latent's).
    """

    j: int
    bits: int = 8
    cut_keep: float = 1.0
    layer_keep: tuple[tuple[int, float], ...] = ()
    criterion: str = "l1"
    codec: str = "none"
    radio: str = "ble5"
    image_codec: str = "raw"
    quality: int = 0
    bottleneck: int = 0
    rate_lambda: float = 0.0

    @property
    def coded_image(self) -> bool:
        """A lossy image codec at the point that sends the image."""
        return self.image_codec != "raw"

    @property
    def pruned(self) -> bool:
        return self.cut_keep < 1.0 or any(r < 1.0 for _, r in self.layer_keep)

    def accuracy_key(self, table: CutTable) -> str:
        """Identifies the trained model: radio and codec never change it, and keep ratios count by the channels
        they keep (out of ``table.conv_channels``), so two ratios that round to the same count are one model.
        E.g. ``j=3;b=1;cut=8/64;L=[0:8/16,2:32/32];crit=l1``; a coded image ``j=0;img=jpeg;q=50``; a learned
        bottleneck ``j=4;bn=16;lam=0.005``.
        """
        p = table[self.j]
        if p.sends_image and self.coded_image:
            return f"j={self.j};img={self.image_codec};q={self.quality}"
        if not p.is_split:
            return f"j={self.j}"
        if self.bottleneck:
            return bottleneck_key(self.j, self.bottleneck, self.rate_lambda)
        channels = table.conv_channels
        kept = [(c, table.kept(c, float(r)), channels[c]) for c, r in self.layer_keep]
        pruned = any(k < n for _, k, n in kept)
        cut = "-"  # no single conv makes the cut tensor (CutPoint.note)
        if p.conv is not None:
            k, n = table.kept(p.conv, float(self.cut_keep)), channels[p.conv]
            cut, pruned = f"{k}/{n}", pruned or k < n
        keeps = ",".join(f"{c}:{k}/{n}" for c, k, n in kept)
        crit = self.criterion if pruned else "-"
        return f"j={self.j};b={self.bits};cut={cut};L=[{keeps}];crit={crit}"

    def keep_map(self, table: CutTable) -> dict[int, float]:
        """Prune request for :func:`models.prune.prune` (darknet conv -> keep ratio)."""
        out = {c: float(r) for c, r in self.layer_keep if r < 1.0}
        cut = table[self.j].conv
        if cut is not None and self.cut_keep < 1.0:
            out[cut] = float(self.cut_keep)
        return out


def bottleneck_key(j: int, latent: int, rate_lambda: float) -> str:
    """The accuracy key of a learned bottleneck (:meth:`DesignPoint.accuracy_key`)."""
    return f"j={j};bn={latent};lam={float(rate_lambda):g}"


def bottleneck_of(key: str) -> tuple[int, float] | None:
    """(latent channels, rate weight) of a learned bottleneck's accuracy key; None for any other key."""
    parts = dict(p.split("=", 1) for p in key.split(";") if "=" in p)
    return (int(parts["bn"]), float(parts["lam"])) if "bn" in parts else None


def is_anchor(key: str) -> bool:
    """Whether an accuracy key (:meth:`DesignPoint.accuracy_key`) is an unpruned point - the anchors the search
    queues: no step 1/2 pruning in the key - or a coded image (j=0 with JPEG/WebP), the reference of every
    comparison."""
    return ";" not in key or key.endswith("crit=-") or key.startswith("j=0;img=")
