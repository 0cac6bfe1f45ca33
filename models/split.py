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

from models.interface import ImageInterface, QuantInterface, calibrate
from models.tiny_yolov3 import (
    NUM_LAYERS,
    PARTITION_LAYERS,
    ConvBlock,
    Route,
    TinyYOLOv3,
    TinyYOLOv3Config,
    conv_layer_macs,
    head_convs,
    is_conv,
    layer_table,
    run_layers,
)

PARTITIONS: tuple[int, ...] = tuple(range(len(PARTITION_LAYERS)))


def check_partition(j: int) -> int:
    if not isinstance(j, int) or isinstance(j, bool) or j not in PARTITIONS:
        raise ValueError(f"partition j={j!r} not in {list(PARTITIONS)}")
    return j


@dataclass(frozen=True)
class CutPoint:
    """Static facts of partition point j at full width (before pruning), like timm's ``feature_info``.

    Attributes:
        j: partition index.
        layer: darknet index of the last node layer (-1 for j=0).
        conv: the conv whose output channels are the payload (step 1 prunes it); None at j=0 (the node sends
            the image) and j=6 (it sends detections).
        earlier_convs: the node convs before ``conv`` that step 2 may prune, in darknet order.
        channels, height, width: shape of the tensor the node sends (the image for j=0; for j=6 the node
            sends detections and the shape is that of the last head, for reference only).
        stride: input pixels per cut-tensor pixel.
        node_macs, edge_macs: MACs on each side at full width.
    """

    j: int
    layer: int
    conv: int | None
    earlier_convs: tuple[int, ...]
    channels: int
    height: int
    width: int
    stride: int
    node_macs: int
    edge_macs: int

    @property
    def values(self) -> int:
        return self.channels * self.height * self.width

    @property
    def is_split(self) -> bool:
        """A feature map crosses (1 <= j <= 5): the cut is quantized and may be pruned."""
        return self.conv is not None

    @property
    def sends_image(self) -> bool:
        """Nothing runs on the node (j=0): it sends the 8-bit image."""
        return self.layer < 0

    @property
    def sends_detections(self) -> bool:
        """Everything runs on the node (j=6): it sends the decoded detections."""
        return self.layer >= 0 and self.conv is None


class CutTable(tuple):
    """The cut points of one model configuration, indexed by j (``table[j]``), plus the unpruned output
    channels of every prunable conv (``conv_channels``). The one source of layer numbers for the rest of the
    code: step-1/step-2 targets, trial parameter names and export columns all derive from it."""

    conv_channels: dict[int, int]

    def __new__(cls, points: list[CutPoint], conv_channels: dict[int, int]) -> CutTable:
        table = super().__new__(cls, points)
        table.conv_channels = dict(conv_channels)
        return table

    @property
    def prunable_convs(self) -> tuple[int, ...]:
        """Every conv that step 1 or step 2 prunes at some j, in darknet order."""
        return tuple(sorted(self.conv_channels))

    @property
    def earlier_convs(self) -> tuple[int, ...]:
        """Every conv that step 2 prunes at some j, in darknet order (the ``keep_L<conv>`` parameters)."""
        return tuple(sorted({c for p in self for c in p.earlier_convs}))


def cut_points(cfg: TinyYOLOv3Config) -> CutTable:
    """The cut-point table of ``cfg``, from the config alone (no forward pass)."""
    table = layer_table(cfg)
    total = sum(t.macs for t in table)
    heads = set(head_convs())
    pts = []
    for j, cut in enumerate(PARTITION_LAYERS):
        node = sum(t.macs for t in table[: cut + 1])
        node_convs = [i for i in range(cut + 1) if is_conv(i) and i not in heads]
        conv = node_convs[-1] if node_convs and cut < NUM_LAYERS - 1 else None
        earlier = tuple(c for c in node_convs if conv is not None and c < conv)
        if cut < 0:
            c, (h, w) = 3, (cfg.input_size, cfg.input_size)
        else:
            c, (h, w) = table[cut].out_channels, table[cut].out_hw
        pts.append(CutPoint(j, cut, conv, earlier, c, h, w, cfg.input_size // h, node, total - node))
    channels = {i: table[i].out_channels for p in pts for i in (*p.earlier_convs, p.conv) if i is not None}
    return CutTable(pts, channels)


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
        self.cut_point = cut_points(cfg)[j]
        self.node = node
        self.interface = interface if interface is not None else nn.Identity()
        self.edge = edge

    @property
    def cut_layer(self) -> int:
        return self.cut_point.layer

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
        p = self.cut_point
        c = self.layer(p.conv).conv.out_channels if p.conv is not None else p.channels
        return c, p.height, p.width

    def node_convs(self) -> list[int]:
        """Prunable conv layers on the node (heads excluded), in darknet order."""
        heads = head_convs()
        return sorted(int(i) for i, m in self.node.layers.items() if isinstance(m, ConvBlock) and int(i) not in heads)

    def adapted_convs(self, n: int) -> list[int]:
        """Darknet indices of the edge convs that adapt to the cut when fine-tuning: the first ``n`` after it,
        and the conv after any route that reads the cut layer directly (at j=5 route 20 carries conv 8's output
        to conv 21)."""
        layers = self.edge.layers
        convs = sorted(int(k) for k, m in layers.items() if isinstance(m, ConvBlock))
        out = set(convs[:n])
        if n > 0:
            for k, m in layers.items():
                nxt = layers[str(int(k) + 1)] if str(int(k) + 1) in layers else None
                if isinstance(m, Route) and self.cut_layer in m.sources and isinstance(nxt, ConvBlock):
                    out.add(int(k) + 1)
        return sorted(out)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, device: torch.device | str, percentile: float,
                  batch_size: int = 64) -> None:
        """Calibrate the interface's mu and max (Eq. 5) on the node's outputs for ``images`` (N, 3, S, S);
        a no-op at j=0 and j=6."""
        if self.cut_point.is_split:
            self.eval().to(device)
            calibrate(self.interface, lambda: (self.node(images[i:i + batch_size].to(device))
                                               for i in range(0, len(images), batch_size)), percentile)

    @torch.no_grad()
    def node_peak_activation(self, x: torch.Tensor) -> int:
        """Largest input + output (values, one image) of any leaf layer on the node: the node's working RAM
        in values. ``x``: (N, 3, S, S), only the first image is run."""
        peak = [x[0].numel()]

        def hook(m, inp, out):
            if torch.is_tensor(out) and inp and torch.is_tensor(inp[0]):
                peak.append(inp[0][0].numel() + out[0].numel())

        hs = [m.register_forward_hook(hook) for m in self.node.modules() if not list(m.children())]
        try:
            self.node(x[:1])
        finally:
            for h in hs:
                h.remove()
        return int(max(peak))


def split(model: TinyYOLOv3, j: int, bits: int = 8, interface: bool = True, copy_model: bool = True,
          recon: str | None = None) -> SplitModel:
    """Split ``model`` at partition point j.

    Args:
        model: the unsplit network (left unchanged unless ``copy_model=False``).
        j: partition point 0..6.
        bits: interface bit width b (1..8); j=0 always sends 8-bit pixels.
        recon: ``paper`` (Eq. 6, the default), ``midpoint`` or ``centroid`` (see :mod:`models.interface`).
        interface: build the interface enabled; with False the split model equals the unsplit one.
        copy_model: deep-copy the model first so pruning and fine-tuning never touch the baseline.

    Returns:
        The split model; its interface still needs :meth:`SplitModel.calibrate` where a feature map is cut.
    """
    check_partition(j)
    src = copy.deepcopy(model) if copy_model else model
    if copy_model:
        src.requires_grad_(True)  # the split model is for pruning and fine-tuning (an EMA copy may be frozen)
    cut = PARTITION_LAYERS[j]
    layers = dict(enumerate(src.layers))
    node = NodePart({i: m for i, m in layers.items() if i <= cut}, cut)
    edge = EdgePart({i: m for i, m in layers.items() if i > cut}, cut)
    cut_point = cut_points(src.cfg)[j]
    if cut_point.sends_image:
        iface: QuantInterface | None = ImageInterface(enabled=interface)
    elif cut_point.sends_detections:
        iface = None
    else:
        iface = QuantInterface(bits=bits, enabled=interface, recon=recon)
    sm = SplitModel(node, iface, edge, j, src.cfg)
    sm.train(model.training)
    return sm
