"""Totals: node energy (Eq. 1 + quantize + codec) and end-to-end latency, with breakdowns, and the
Table-I ratios against the all-in-edge (j=0) and all-in-node (the last cut point) baselines."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from objectives.costs.codec import (
    CodecProfile,
    compress_energy_mj,
    compress_latency_ms,
    decompress_latency_ms,
    quantize_energy_mj,
    quantize_latency_ms,
)
from objectives.costs.image import ImageCodecProfile, decode_latency_ms, encode_energy_mj, encode_latency_ms
from objectives.costs.platform import (
    EdgeProfile,
    ProcessorProfile,
    compute_energy_mj,
    compute_latency_ms,
    edge_latency_ms,
    memory_feasibility,
)
from objectives.costs.radio import RadioProfile, transfer_cost


@dataclass(frozen=True)
class NodeWork:
    """What one evaluated design point asks of the node, in plain numbers.

    Attributes:
        j: partition point (0 sends the image, the last one - Tiny-YOLOv3's 6 - sends detections).
        node_macs, edge_macs: MACs on each side.
        feature_values: values quantized at the cut (C*H*W; 0 where the image or the detections are sent).
        raw_bytes: bytes before the codec (packed codes, the 8-bit image, or the detection rows).
        payload_bytes: bytes sent, after the codec, header included.
        weight_count: parameters on the node; peak_activation_values: largest layer input + output.
        image_pixels: pixels the node codes with a lossy image codec (0: none; j=0 with JPEG/WebP).
        codec_flash_bytes: constant tables the codec keeps on the node (an entropy codec's fitted model).
    """

    j: int
    node_macs: int
    edge_macs: int
    feature_values: int
    raw_bytes: int
    payload_bytes: int
    weight_count: int = 0
    peak_activation_values: int = 0
    image_pixels: int = 0
    codec_flash_bytes: int = 0


@dataclass(frozen=True)
class CostBreakdown:
    """Node energy (mJ) and end-to-end latency (ms) of one design point on one radio/codec/platform."""

    radio: str
    codec: str
    platform: str
    compute_mj: float
    quantize_mj: float
    compress_mj: float
    radio_mj: float
    compute_ms: float
    quantize_ms: float
    compress_ms: float
    radio_ms: float
    decompress_ms: float
    edge_ms: float
    feasible: bool = True
    reason: str = ""
    image_codec: str = ""  # the image-codec profile that priced a coded image (j=0), else empty
    encode_mj: float = 0.0  # coding the image on the node
    encode_ms: float = 0.0
    image_decode_ms: float = 0.0  # decoding it on the edge

    @property
    def node_energy_mj(self) -> float:
        """Eq. 1 extended: sum_{i<=j} E_P + E_quant + E_image-encode + E_codec + E_C."""
        return self.compute_mj + self.quantize_mj + self.encode_mj + self.compress_mj + self.radio_mj

    @property
    def latency_ms(self) -> float:
        """Node compute + quantize + image encode + compress + transfer + decompress + image decode + edge compute."""
        return (self.compute_ms + self.quantize_ms + self.encode_ms + self.compress_ms + self.radio_ms
                + self.decompress_ms + self.image_decode_ms + self.edge_ms)

    def as_dict(self) -> dict[str, float | str | bool]:
        d = asdict(self)
        d["node_energy_mj"] = self.node_energy_mj
        d["latency_ms"] = self.latency_ms
        return d


def evaluate_costs(
    work: NodeWork,
    node: ProcessorProfile,
    edge: EdgeProfile,
    radio: RadioProfile,
    codec: CodecProfile,
    edge_measured_ms: float | None = None,
    image: ImageCodecProfile | None = None,
) -> CostBreakdown:
    """Energy and latency of ``work`` on a node/edge/radio/codec combination; ``image`` prices the image codec
    of a coded image (``work.image_pixels > 0``).

    An infeasible point (node memory, radio duty cycle) is returned with ``feasible=False`` and the reason;
    its numbers are still filled in so a user can see how far off it is.
    """
    if work.image_pixels and image is None:
        raise ValueError("a coded image needs its image-codec profile (image=...)")
    px = work.image_pixels if image is not None else 0
    tx = transfer_cost(work.payload_bytes, radio)
    # a coded image: the encoder's working memory and its output buffer beside the image
    image_ram = image.node_ram_bytes + work.payload_bytes if px else 0.0
    coding = work.raw_bytes and (work.feature_values or not codec.compress_cycles_per_value)
    # an entropy codec (per-value cost) codes feature maps only, holding its whole output (rANS codes in reverse)
    codec_ram = (codec.node_ram_bytes + (work.payload_bytes if codec.compress_cycles_per_value else 0.0)
                 if coding else 0.0)
    mem = memory_feasibility(work.weight_count, work.peak_activation_values, node, codec_ram + image_ram,
                             work.codec_flash_bytes if coding else 0)
    reasons = [r for ok, r in ((mem.ok, mem.reason), (tx.feasible, tx.reason)) if not ok]
    return CostBreakdown(
        radio=radio.name, codec=codec.name, platform=node.name,
        compute_mj=compute_energy_mj(work.node_macs, node),
        quantize_mj=quantize_energy_mj(work.feature_values, node),
        compress_mj=compress_energy_mj(work.raw_bytes, codec, node, work.feature_values),
        radio_mj=tx.energy_mj,
        compute_ms=compute_latency_ms(work.node_macs, node),
        quantize_ms=quantize_latency_ms(work.feature_values, node),
        compress_ms=compress_latency_ms(work.raw_bytes, codec, node, work.feature_values),
        radio_ms=tx.latency_ms,
        decompress_ms=decompress_latency_ms(work.raw_bytes, codec, edge, work.feature_values),
        edge_ms=edge_latency_ms(work.edge_macs, edge, edge_measured_ms),
        feasible=not reasons, reason="; ".join(reasons),
        image_codec=image.name if px else "",
        encode_mj=encode_energy_mj(px, image, node) if px else 0.0,
        encode_ms=encode_latency_ms(px, image, node) if px else 0.0,
        image_decode_ms=decode_latency_ms(px, image, edge) if px else 0.0,
    )


@dataclass(frozen=True)
class Table1:
    """Paper Table I: energy saving and system speed-up of a point against the two baselines (x times)."""

    energy_saving_vs_edge: float
    energy_saving_vs_node: float
    speedup_vs_edge: float
    speedup_vs_node: float


def table1_ratios(best: CostBreakdown, all_in_edge: CostBreakdown, all_in_node: CostBreakdown) -> Table1:
    """Baseline energy / best energy and baseline latency / best latency."""
    if best.node_energy_mj <= 0 or best.latency_ms <= 0:
        raise ValueError("the best point must have positive energy and latency")
    return Table1(
        energy_saving_vs_edge=all_in_edge.node_energy_mj / best.node_energy_mj,
        energy_saving_vs_node=all_in_node.node_energy_mj / best.node_energy_mj,
        speedup_vs_edge=all_in_edge.latency_ms / best.latency_ms,
        speedup_vs_node=all_in_node.latency_ms / best.latency_ms,
    )
