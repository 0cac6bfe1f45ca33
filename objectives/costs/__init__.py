"""Node energy and latency cost models: pure functions of plain numbers, units in the names."""

from objectives.costs.codec import CodecProfile
from objectives.costs.image import ImageCodecProfile
from objectives.costs.platform import (
    EdgeProfile,
    Feasibility,
    ProcessorProfile,
    compute_energy_mj,
    compute_latency_ms,
    edge_latency_ms,
    memory_feasibility,
)
from objectives.costs.radio import LayerSpec, LoRaPHY, RadioProfile, TxCost, frame_sizes, transfer_cost
from objectives.costs.total import CostBreakdown, NodeWork, Table1, evaluate_costs, table1_ratios

__all__ = [
    "CodecProfile", "CostBreakdown", "EdgeProfile", "Feasibility", "ImageCodecProfile", "LayerSpec", "LoRaPHY",
    "NodeWork",
    "ProcessorProfile", "RadioProfile", "Table1", "TxCost", "compute_energy_mj",
    "compute_latency_ms", "edge_latency_ms", "evaluate_costs", "frame_sizes", "memory_feasibility",
    "table1_ratios", "transfer_cost",
]
