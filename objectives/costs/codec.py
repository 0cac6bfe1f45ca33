"""Cost of the interface on the node (quantize + pack) and of the payload codec (compress on the node,
decompress on the edge). Work is counted in cycles per byte and priced with the node's nJ/cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional  # noqa: UP035 - OmegaConf structured configs

from models.codec import CODECS
from objectives.costs._checks import check_numbers
from objectives.costs.platform import EdgeProfile, ProcessorProfile, cycles_energy_mj, cycles_latency_ms


@dataclass(frozen=True)
class CodecProfile:
    """Cycles per byte of a codec on the node and its speed on the edge.

    A profile is a *cost* description of one compression algorithm: ``name`` is the profile's own name (the
    design choice a trial records, e.g. ``zlib`` or a measured ``zlib_host``), ``codec`` the algorithm that
    produces the payload (one of :data:`models.codec.CODECS`). Several profiles may price one algorithm.

    Attributes:
        compress_cycles_per_byte: node cycles per input (packed) byte; 0 for ``none``.
        compress_cycles_per_value: node cycles per coded value (an entropy codec codes each b-bit code: context,
            table lookup, one rANS step).
        node_ram_bytes: working memory the compressor needs on the node (an entropy codec also holds its whole
            output, rANS coding in reverse: the payload is added to it).
        decompress_mb_per_s: edge decompression speed in MB/s of output; 0 means free (``none``).
        decompress_values_per_s: edge decoding speed of an entropy codec in values per second.
        level: the library's compression level the figures hold for.
    """

    name: str
    codec: str
    compress_cycles_per_byte: float = 0.0
    compress_cycles_per_value: float = 0.0
    node_ram_bytes: float = 0.0
    decompress_mb_per_s: float = 0.0
    decompress_values_per_s: float = 0.0
    level: Optional[int] = None  # noqa: UP045
    source: str = ""

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec={self.codec!r} not in {sorted(CODECS)} (the compression algorithm)")
        check_numbers(self, non_negative=("compress_cycles_per_byte", "compress_cycles_per_value", "node_ram_bytes",
                                          "decompress_mb_per_s", "decompress_values_per_s"))


def quantize_energy_mj(values: int, node: ProcessorProfile) -> float:
    """Interface cost on the node: quantize (Eq. 5) and pack ``values`` feature values."""
    return cycles_energy_mj(values * node.quant_cycles_per_value, node)


def quantize_latency_ms(values: int, node: ProcessorProfile) -> float:
    return cycles_latency_ms(values * node.quant_cycles_per_value, node)


def _compress_cycles(raw_bytes: int, values: int, codec: CodecProfile) -> float:
    return raw_bytes * codec.compress_cycles_per_byte + values * codec.compress_cycles_per_value


def compress_energy_mj(raw_bytes: int, codec: CodecProfile, node: ProcessorProfile, values: int = 0) -> float:
    """Node energy to code ``raw_bytes`` of packed codes (``values`` codes, for a per-value codec)."""
    return cycles_energy_mj(_compress_cycles(raw_bytes, values, codec), node)


def compress_latency_ms(raw_bytes: int, codec: CodecProfile, node: ProcessorProfile, values: int = 0) -> float:
    return cycles_latency_ms(_compress_cycles(raw_bytes, values, codec), node)


def decompress_latency_ms(raw_bytes: int, codec: CodecProfile, edge: EdgeProfile, values: int = 0) -> float:
    """Edge time to restore ``raw_bytes`` of packed codes (``values`` codes)."""
    ms = raw_bytes / (codec.decompress_mb_per_s * 1e6) * 1e3 if codec.decompress_mb_per_s > 0 else 0.0
    if codec.decompress_values_per_s > 0:
        ms += values / codec.decompress_values_per_s * 1e3
    return ms
