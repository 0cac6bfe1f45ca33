"""Partition Tiny-YOLOv3 at point j into node part, interface and edge part.

Partition points (DESIGN.md, darknet numbering): j=0 nothing on the node (it sends the image); j=1..4 after
the max-pools 1, 3, 5, 7; j=5 after conv 8 (its output feeds both max-pool 9 and the route at 20, so it is
the last single-tensor cut); j=6 everything on the node (it sends the detections).

The split model reuses the backbone's modules (after a deep copy, so the baseline is never changed): the
node holds darknet layers 0..cut, the edge the layers after it, both addressable by darknet number.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.interface import ImageInterface, QuantInterface
from models.tiny_yolov3 import (
    HEAD_CONVS,
    NUM_LAYERS,
    ConvBlock,
    TinyYOLOv3,
    TinyYOLOv3Config,
    conv_layer_macs,
    layer_table,
    run_layers,
)

PARTITIONS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
# darknet index of the last node layer for each j (-1: none)
CUT_LAYER: dict[int, int] = {0: -1, 1: 1, 2: 3, 3: 5, 4: 7, 5: 8, 6: NUM_LAYERS - 1}
# the conv whose output channels are the payload (step 1 prunes it); None where the payload is not a map
CUT_CONV: dict[int, int | None] = {0: None, 1: 0, 2: 2, 3: 4, 4: 6, 5: 8, 6: None}


def check_partition(j: int) -> int:
    if not isinstance(j, int) or isinstance(j, bool) or j not in PARTITIONS:
        raise ValueError(f"partition j={j!r} not in {list(PARTITIONS)}")
    return j


@dataclass(frozen=True)
class CutPoint:
    """Static facts of partition point j at full width (before pruning).

    Attributes:
        j: partition index.
        layer: darknet index of the last node layer (-1 for j=0).
        channels, height, width: shape of the tensor the node sends (the image for j=0; for j=6 the node
            sends detections and the shape is that of the last head, for reference only).
        node_macs, edge_macs: MACs on each side at full width.
    """

    j: int
    layer: int
    channels: int
    height: int
    width: int
    node_macs: int
    edge_macs: int

    @property
    def values(self) -> int:
        return self.channels * self.height * self.width


def cut_points(cfg: TinyYOLOv3Config) -> list[CutPoint]:
    """Cut-point metadata for every j, from the config alone (no forward pass)."""
    table = layer_table(cfg)
    total = sum(t.macs for t in table)
    pts = []
    for j in PARTITIONS:
        cut = CUT_LAYER[j]
        node = sum(t.macs for t in table[: cut + 1])
        if cut < 0:
            c, (h, w) = 3, (cfg.input_size, cfg.input_size)
        else:
            c, (h, w) = table[cut].out_channels, table[cut].out_hw
        pts.append(CutPoint(j, cut, c, h, w, node, total - node))
    return pts


class _DarknetIndex:
    """Index a ModuleDict by darknet layer number."""

    def __init__(self, layers: nn.ModuleDict) -> None:
        self._layers = layers

    def __getitem__(self, i: int) -> nn.Module:
        return self._layers[str(i)]


class NodePart(nn.Module):
    """Darknet layers 0..cut. ``forward`` returns the cut tensor (j<6) or the raw head outputs (j=6)."""

    def __init__(self, layers: dict[int, nn.Module], cut: int) -> None:
        super().__init__()
        self.cut = cut
        self.layers = nn.ModuleDict({str(i): m for i, m in layers.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.cut < 0:
            return x
        out, heads = run_layers(_DarknetIndex(self.layers), x, 0, self.cut)
        return heads if self.cut == NUM_LAYERS - 1 else out


class EdgePart(nn.Module):
    """Darknet layers cut+1..23: the de-quantized cut tensor in, raw head outputs out."""

    def __init__(self, layers: dict[int, nn.Module], cut: int) -> None:
        super().__init__()
        self.cut = cut
        self.layers = nn.ModuleDict({str(i): m for i, m in layers.items()})

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        if self.cut == NUM_LAYERS - 1:
            return x  # j=6: the node already produced the heads
        _, heads = run_layers(_DarknetIndex(self.layers), x, self.cut + 1, NUM_LAYERS - 1)
        return heads


@dataclass(frozen=True)
class MacReport:
    """MACs per darknet conv layer on each side of the cut, and their totals."""

    node_per_layer: dict[int, int]
    edge_per_layer: dict[int, int]

    @property
    def node(self) -> int:
        return sum(self.node_per_layer.values())

    @property
    def edge(self) -> int:
        return sum(self.edge_per_layer.values())


class SplitModel(nn.Module):
    """M_p = M_{1..j} ∪ I ∪ M_{j+1..N} (Eq. 2).

    ``forward(x)`` = ``edge(interface(node(x)))`` and returns the raw head outputs like
    :class:`TinyYOLOv3`. At j=6 the interface is absent (the node sends detections, see
    :func:`models.codec.encode_detections`).
    """

    def __init__(self, node: NodePart, interface: QuantInterface | None, edge: EdgePart, j: int,
                 cfg: TinyYOLOv3Config) -> None:
        super().__init__()
        self.j = j
        self.cfg = cfg
        self.node = node
        self.interface = interface if interface is not None else nn.Identity()
        self.edge = edge

    @property
    def cut_layer(self) -> int:
        return CUT_LAYER[self.j]

    @property
    def has_interface(self) -> bool:
        return isinstance(self.interface, QuantInterface)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.edge(self.interface(self.node(x)))

    def all_layers(self) -> Iterator[tuple[int, nn.Module]]:
        """(darknet index, module) over node then edge."""
        for part in (self.node, self.edge):
            for k, m in part.layers.items():
                yield int(k), m

    def layer(self, i: int) -> nn.Module:
        part = self.node if i <= self.cut_layer else self.edge
        return part.layers[str(i)]

    def macs(self) -> MacReport:
        per_layer = conv_layer_macs([m for _, m in sorted(self.all_layers())], self.cfg)
        cut = self.cut_layer
        return MacReport({i: m for i, m in per_layer.items() if i <= cut},
                         {i: m for i, m in per_layer.items() if i > cut})

    def cut_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensor sent at j (after any pruning), without a forward pass."""
        if self.j == 0:
            return 3, self.cfg.input_size, self.cfg.input_size
        table = layer_table(self.cfg)
        conv = self.layer(CUT_CONV[self.j]) if CUT_CONV[self.j] is not None else None
        c = conv.conv.out_channels if isinstance(conv, ConvBlock) else table[self.cut_layer].out_channels
        return (c, *table[self.cut_layer].out_hw)

    def node_convs(self) -> list[int]:
        """Prunable conv layers on the node (heads excluded), in darknet order."""
        return sorted(int(i) for i, m in self.node.layers.items()
                      if isinstance(m, ConvBlock) and int(i) not in HEAD_CONVS)


def split(model: TinyYOLOv3, j: int, bits: int = 8, midpoint: bool = False, interface: bool = True,
          copy_model: bool = True, recon: str | None = None) -> SplitModel:
    """Split ``model`` at partition point j.

    Args:
        model: the unsplit network (left unchanged unless ``copy_model=False``).
        j: partition point 0..6.
        bits: interface bit width b (1..8); j=0 always sends 8-bit pixels.
        midpoint: reconstruct at bin centres (see :mod:`models.interface`).
        recon: ``paper`` (Eq. 6), ``midpoint`` or ``centroid``; overrides ``midpoint`` when given.
        interface: build the interface enabled; with False the split model equals the unsplit one.
        copy_model: deep-copy the model first so pruning and fine-tuning never touch the baseline.

    Returns:
        The split model; its interface still needs :func:`models.interface.calibrate` for 1 <= j <= 5.
    """
    check_partition(j)
    src = copy.deepcopy(model) if copy_model else model
    if copy_model:
        src.requires_grad_(True)  # the split model is for pruning and fine-tuning (an EMA copy may be frozen)
    cut = CUT_LAYER[j]
    layers = dict(enumerate(src.layers))
    node = NodePart({i: m for i, m in layers.items() if i <= cut}, cut)
    edge = EdgePart({i: m for i, m in layers.items() if i > cut}, cut)
    if j == 0:
        iface: QuantInterface | None = ImageInterface(enabled=interface)
    elif j == 6:
        iface = None
    else:
        iface = QuantInterface(bits=bits, midpoint=midpoint, enabled=interface, recon=recon)
    sm = SplitModel(node, iface, edge, j, src.cfg)
    sm.train(model.training)
    return sm
