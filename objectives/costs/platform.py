"""Processing cost of the node (layers 1..j, Eq. 1's E_P) and of the edge (the rest).

Pure functions of MAC counts and profile numbers. The profiles' constants live in ``conf/platform/``,
each with its source (``docs/cost_parameters.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

from objectives.costs._checks import check_numbers


@dataclass(frozen=True)
class ProcessorProfile:
    """A node processor.

    Attributes:
        nj_per_mac: energy per multiply-accumulate of int8 inference, whole board (nJ).
        macs_per_s: sustained int8 MAC throughput of the inference runtime.
        nj_per_cycle: energy per core clock cycle (for codec and quantization work counted in cycles).
        clock_hz: core clock.
        static_mw: power drawn on top of ``nj_per_mac`` while computing; 0 where ``nj_per_mac`` is
            measured at the board and already includes it.
        flash_bytes, ram_bytes: memory for weights and for activations (0 = unlimited).
        bytes_per_weight, bytes_per_activation: storage width of the deployed model (int8 = 1).
        quant_cycles_per_value: cycles to quantize (Eq. 5) and pack one feature value.
        image_encoders: image format -> the image-codec profile (``conf/image_codec/``) this node encodes it with.
    """

    name: str
    nj_per_mac: float
    macs_per_s: float
    nj_per_cycle: float
    clock_hz: float
    static_mw: float = 0.0
    flash_bytes: float = 0.0
    ram_bytes: float = 0.0
    bytes_per_weight: float = 1.0
    bytes_per_activation: float = 1.0
    quant_cycles_per_value: float = 4.0
    source: str = ""
    image_encoders: dict[str, str] | None = None

    def __post_init__(self) -> None:
        check_numbers(self, ("nj_per_mac", "macs_per_s", "nj_per_cycle", "clock_hz", "bytes_per_weight",
                      "bytes_per_activation"), ("static_mw", "flash_bytes", "ram_bytes", "quant_cycles_per_value"))


@dataclass(frozen=True)
class EdgeProfile:
    """The edge server. ``measured=True`` means its latency is timed on this machine instead."""

    name: str
    macs_per_s: float = 1e12
    overhead_ms: float = 0.0
    measured: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        check_numbers(self, ("macs_per_s",), ("overhead_ms",))


@dataclass(frozen=True)
class Feasibility:
    ok: bool
    reason: str = ""


def compute_energy_mj(macs: float, platform: ProcessorProfile) -> float:
    """E_P of Eq. 1 for ``macs`` multiply-accumulates: nJ/MAC x MACs (+ static power x time)."""
    if macs < 0:
        raise ValueError(f"macs={macs} must be >= 0")
    return macs * platform.nj_per_mac * 1e-6 + platform.static_mw * compute_latency_ms(macs, platform) * 1e-3


def compute_latency_ms(macs: float, platform: ProcessorProfile) -> float:
    if macs < 0:
        raise ValueError(f"macs={macs} must be >= 0")
    return macs / platform.macs_per_s * 1e3


def cycles_energy_mj(cycles: float, platform: ProcessorProfile) -> float:
    return cycles * platform.nj_per_cycle * 1e-6


def cycles_latency_ms(cycles: float, platform: ProcessorProfile) -> float:
    return cycles / platform.clock_hz * 1e3


def edge_latency_ms(macs: float, edge: EdgeProfile, measured_ms: float | None = None) -> float:
    """Latency of the edge half: a timed figure for ``measured`` profiles, else MACs / throughput + overhead."""
    if edge.measured:
        if measured_ms is None:
            raise ValueError(f"edge profile {edge.name!r} is 'measured' but no measured latency was given")
        return measured_ms
    if macs <= 0:
        return 0.0
    return macs / edge.macs_per_s * 1e3 + edge.overhead_ms


def memory_feasibility(weight_count: int, peak_activation_values: int, platform: ProcessorProfile,
                       extra_ram_bytes: float = 0.0, extra_flash_bytes: float = 0.0) -> Feasibility:
    """Does the node part fit? Weights (plus ``extra_flash_bytes``, e.g. an entropy codec's tables) in flash; the
    largest layer's input + output activations (plus ``extra_ram_bytes``, e.g. a codec's working memory) in RAM."""
    w = weight_count * platform.bytes_per_weight + extra_flash_bytes
    a = peak_activation_values * platform.bytes_per_activation + extra_ram_bytes
    if platform.flash_bytes and w > platform.flash_bytes:
        what = "weights and codec tables" if extra_flash_bytes else "weights"
        return Feasibility(False, f"{what} need {w / 1024:.0f} KiB, {platform.name} has "
                                  f"{platform.flash_bytes / 1024:.0f} KiB flash")
    if platform.ram_bytes and a > platform.ram_bytes:
        return Feasibility(False, f"activations and buffers need {a / 1024:.0f} KiB, {platform.name} has "
                                  f"{platform.ram_bytes / 1024:.0f} KiB RAM")
    return Feasibility(True)
