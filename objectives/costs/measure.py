"""Measurements on the current machine: the edge half's latency (``platform/edge=measured``) and the
codecs' cycles per byte (to write a host-derived codec profile)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from models.codec import compress_body, get_codec
from objectives.costs.codec import CodecProfile


@torch.no_grad()
def time_edge_ms(edge: torch.nn.Module, example: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of ``edge(example)`` on the example's device (CUDA is synchronized)."""
    edge.eval()
    cuda = example.is_cuda

    def once() -> float:
        if cuda:
            torch.cuda.synchronize(example.device)
        t = time.perf_counter()
        edge(example)
        if cuda:
            torch.cuda.synchronize(example.device)
        return (time.perf_counter() - t) * 1e3

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(max(1, repeats)))


@dataclass(frozen=True)
class CodecMeasurement:
    codec: str
    level: int | None
    raw_bytes: int
    compressed_bytes: int
    host_compress_s_per_byte: float
    host_decompress_mb_per_s: float


def measure_codec(codec: str, sample: bytes, level: int | None = None, repeats: int = 5) -> CodecMeasurement:
    """Median host time to compress and decompress ``sample`` with the real library."""
    c = get_codec(codec)
    if not sample:
        raise ValueError("measure_codec needs a non-empty sample")
    t_c, t_d, body = [], [], b""
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        body = c.compress(sample, level if level is not None else c.default_level)
        t_c.append(time.perf_counter() - t)
        t = time.perf_counter()
        c.decompress(body, len(sample))
        t_d.append(time.perf_counter() - t)
    used, _ = compress_body(sample, codec, level)
    return CodecMeasurement(codec, level if level is not None else c.default_level, len(sample), len(used),
                            statistics.median(t_c) / len(sample),
                            len(sample) / max(statistics.median(t_d), 1e-9) / 1e6)


def host_codec_profile(m: CodecMeasurement, host_clock_hz: float, node_scale: float,
                       node_ram_bytes: float) -> CodecProfile:
    """A node codec profile from a host measurement.

    node cycles/byte = host seconds/byte x host clock x ``node_scale``. The scale is an assumption the caller
    states: how many more cycles an in-order M-class core needs than the host's out-of-order core for the
    same branchy compression code (cache, branch prediction, issue width).
    """
    return CodecProfile(
        name=f"{m.codec}_host", codec=m.codec, level=m.level,
        compress_cycles_per_byte=m.host_compress_s_per_byte * host_clock_hz * node_scale,
        node_ram_bytes=node_ram_bytes, decompress_mb_per_s=m.host_decompress_mb_per_s,
        source=(f"measured on the host ({m.host_compress_s_per_byte * 1e9:.1f} ns/B at {host_clock_hz / 1e9:.2f} GHz)"
                f" x node_scale={node_scale} (A)"),
    )
