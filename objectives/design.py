"""The design point: one choice of every axis of the space, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from models.split import CUT_CONV

# node convs before the cut conv at each j (step 2 targets), darknet numbering
EARLIER_CONVS: dict[int, tuple[int, ...]] = {j: tuple(c for c in (0, 2, 4, 6) if CUT_CONV[j] is not None
                                                      and c < CUT_CONV[j]) for j in CUT_CONV}


@dataclass(frozen=True)
class DesignPoint:
    """Where to cut (j), how to quantize (bits) and prune (keep ratios), which codec and radio.

    Attributes:
        j: partition point 0..6.
        bits: interface bits (ignored at j=0, which sends 8-bit pixels, and j=6, which sends detections).
        cut_keep: share of the cut conv's channels kept (step 1); 1.0 = unpruned.
        layer_keep: (darknet conv, share kept) for the earlier node convs (step 2).
        criterion: pruning importance criterion.
        codec, radio: cost-only axes.
    """

    j: int
    bits: int = 8
    cut_keep: float = 1.0
    layer_keep: tuple[tuple[int, float], ...] = ()
    criterion: str = "l1"
    codec: str = "none"
    radio: str = "ble5"

    @property
    def pruned(self) -> bool:
        return self.cut_keep < 1.0 or any(r < 1.0 for _, r in self.layer_keep)

    def accuracy_key(self) -> str:
        """Identifies the trained model: radio and codec never change it."""
        if self.j in (0, 6):
            return f"j={self.j}"
        keeps = ",".join(f"{c}:{r:.4f}" for c, r in self.layer_keep)
        crit = self.criterion if self.pruned else "-"
        return f"j={self.j};b={self.bits};cut={self.cut_keep:.4f};L=[{keeps}];crit={crit}"

    def keep_map(self) -> dict[int, float]:
        """Prune request for :func:`models.prune.prune` (ratios)."""
        out = {c: float(r) for c, r in self.layer_keep if r < 1.0}
        cut = CUT_CONV.get(self.j)
        if cut is not None and self.cut_keep < 1.0:
            out[cut] = float(self.cut_keep)
        return out
