"""Partition a darknet detector at point j into node part, interface and edge part.

Partition points come from the model's cut-point table (:func:`cut_points`): the darknet layers after which
exactly one tensor crosses from node to edge. Tiny-YOLOv3 keeps the paper's seven (docs/design.md, darknet
numbering): j=0 nothing on the node (it sends the image); j=1..4 after the max-pools 1, 3, 5, 7; j=5 after conv 8
(its output feeds both max-pool 9 and the route at 20, so it is the last single-tensor cut); j=6 everything on
the node (it sends the detections). Other cfgs use every single-tensor cut of their graph.

The split model reuses the backbone's modules (after a deep copy, so the baseline is never changed): the
node holds darknet layers 0..cut, the edge the layers after it, both addressable by darknet number.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.darknet import Darknet, DarknetConv, LayerSpec, RouteLayer, run_layers
from models.detector import DetectorConfig
from models.interface import ImageInterface, QuantInterface, calibrate
from models.tiny_yolov3 import PARTITION_LAYERS, conv_layer_macs

# The paper's partition indices for Tiny-YOLOv3 (the default space); other models have their own table.
PARTITIONS: tuple[int, ...] = tuple(range(len(PARTITION_LAYERS)))


@dataclass(frozen=True)
class CutPoint:
    """Static facts of partition point j at full width (before pruning), like timm's ``feature_info``.

    Attributes:
        j: partition index.
        layer: darknet index of the last node layer (-1: none, the node sends the image; the last layer: all,
            it sends the detections).
        kind: ``image``, ``features`` (a feature map crosses: it is quantized and may be pruned) or ``detections``.
        tensor: darknet index of the layer whose output crosses (usually ``layer``; -1 for the image).
        conv: the conv whose output channels are the payload (step 1 prunes it); None where nothing or no
            single conv makes the cut tensor (``note`` says why).
        earlier_convs: the node convs that step 2 may prune, in darknet order.
        channels, height, width: shape of the tensor the node sends (for ``detections`` that of the last head,
            for reference only).
        stride: input pixels per cut-tensor pixel.
        node_macs, edge_macs: MACs on each side at full width.
        note: why step 1 is not available at a feature cut (empty otherwise).
    """

    j: int
    layer: int
    kind: str
    tensor: int
    conv: int | None
    earlier_convs: tuple[int, ...]
    channels: int
    height: int
    width: int
    stride: int
    node_macs: int
    edge_macs: int
    note: str = ""

    @property
    def values(self) -> int:
        return self.channels * self.height * self.width

    @property
    def is_split(self) -> bool:
        """A feature map crosses: the cut is quantized and may be pruned."""
        return self.kind == "features"

    @property
    def sends_image(self) -> bool:
        """Nothing runs on the node: it sends the 8-bit image."""
        return self.kind == "image"

    @property
    def sends_detections(self) -> bool:
        """Everything runs on the node: it sends the decoded detections."""
        return self.kind == "detections"


class CutTable(tuple):
    """The cut points of one model configuration, indexed by j (``table[j]``), plus the unpruned output
    channels of every prunable conv (``conv_channels``) and the channel multiple a conv must keep when a
    grouped route splits its output (``conv_groups``, e.g. yolov4-tiny's ``groups=2`` routes). The one source of
    layer numbers for the rest of the code: step-1/step-2 targets, trial parameter names and export columns all
    derive from it. ``refused`` names the node convs that are never pruned, with the reason."""

    conv_channels: dict[int, int]
    conv_groups: dict[int, int]
    refused: dict[int, str]

    def __new__(cls, points: list[CutPoint], conv_channels: dict[int, int], conv_groups: dict[int, int] | None = None,
                refused: dict[int, str] | None = None) -> CutTable:
        table = super().__new__(cls, points)
        table.conv_channels = dict(conv_channels)
        table.conv_groups = dict(conv_groups or {})
        table.refused = dict(refused or {})
        return table

    def __reduce__(self):  # copy/deepcopy/pickle: rebuild with the extra attributes
        return (CutTable, (list(self), self.conv_channels, self.conv_groups, self.refused))

    @property
    def prunable_convs(self) -> tuple[int, ...]:
        """Every conv that step 1 or step 2 prunes at some j, in darknet order."""
        return tuple(sorted(self.conv_channels))

    @property
    def earlier_convs(self) -> tuple[int, ...]:
        """Every conv that step 2 prunes at some j, in darknet order (the ``keep_L<conv>`` parameters)."""
        return tuple(sorted({c for p in self for c in p.earlier_convs}))

    def kept(self, conv: int, keep: int | float) -> int:
        """Channels conv keeps for a ratio or count (see :func:`keep_count`), in its group multiple."""
        return keep_count(self.conv_channels[conv], keep, self.conv_groups.get(conv, 1))


def keep_count(channels: int, keep: int | float, multiple: int = 1) -> int:
    """Channels kept: an int is a count (1..C), a float a ratio in (0, 1]; at least one survives. With
    ``multiple`` > 1 (a grouped route splits the output into that many equal slices) the count is rounded to a
    multiple of it, so every slice keeps the same number of channels."""
    if isinstance(keep, bool):
        raise ValueError(f"keep={keep!r} must be an int count or a float ratio")
    if isinstance(keep, int):
        if not 1 <= keep <= channels or keep % multiple:
            raise ValueError(f"keep={keep} channels not in 1..{channels}" +
                             (f" or not a multiple of {multiple}" if multiple > 1 else ""))
        return keep
    if not 0 < keep <= 1:
        raise ValueError(f"keep ratio={keep} not in (0, 1]")
    k = max(1, min(channels, int(round(channels * keep))))
    return k if multiple == 1 else max(multiple, min(channels, multiple * int(round(k / multiple))))


def _trace(specs: tuple[LayerSpec, ...], i: int) -> int:
    """Follow channel-preserving layers (max-pool, upsample) back from layer i to the layer that makes its
    channels."""
    while i >= 0 and specs[i].kind in ("maxpool", "upsample"):
        i = specs[i].inputs[0]
    return i


def _convs_behind(specs: tuple[LayerSpec, ...], i: int) -> list[int]:
    """The convs whose output channels make up layer i's output (through pools, upsamples, routes, shortcuts)."""
    i = _trace(specs, i)
    if i < 0:
        return []
    if specs[i].kind == "convolutional":
        return [i]
    srcs = specs[i].inputs
    return sorted({c for s in srcs for c in _convs_behind(specs, s)})


def _pruning_rules(specs: tuple[LayerSpec, ...], heads: set[int]) -> tuple[dict[int, int], dict[int, str]]:
    """Convs that a grouped route splits (-> their channel multiple) and convs that cannot be pruned (-> why)."""
    groups: dict[int, int] = {}
    refused: dict[int, str] = {}
    for sp in specs:
        if sp.kind == "route" and sp.args["groups"] > 1:
            g = sp.args["groups"]
            direct = [_trace(specs, s) for s in sp.inputs]
            if len(sp.inputs) == 1 and specs[direct[0]].kind == "convolutional":
                c = direct[0]
                groups[c] = math.lcm(groups.get(c, 1), g)
            else:
                for c in {c for s in sp.inputs for c in _convs_behind(specs, s)}:
                    refused[c] = (f"its output reaches route {sp.index}'s {g}-way channel split through another "
                                  f"route or shortcut, which would move channels across the split")
        elif sp.kind == "shortcut":
            for c in {c for s in sp.inputs for c in _convs_behind(specs, s)}:
                refused[c] = f"shortcut {sp.index} adds it to another layer's output (coupled channels)"
    for c in heads:
        refused.pop(c, None)
    return groups, refused


def _crossing(specs: tuple[LayerSpec, ...], cut: int, heads: set[int]) -> set[int]:
    return {s for sp in specs[cut + 1:] for s in sp.inputs if s <= cut} | {h for h in heads if h <= cut}


def cut_points(cfg: DetectorConfig) -> CutTable:
    """The cut-point table of ``cfg``, from the config alone (no forward pass)."""
    specs = cfg.specs()
    total = sum(sp.macs for sp in specs)
    last = len(specs) - 1
    heads = set(cfg.head_convs)
    convs = [i for i, sp in enumerate(specs) if sp.kind == "convolutional" and i not in heads]
    groups, refused = _pruning_rules(specs, heads)
    pts = []
    for j, cut in enumerate(cfg.cut_layers()):
        node = sum(sp.macs for sp in specs[: cut + 1])
        conv, note, earlier = None, "", ()
        if cut < 0:
            kind, tensor, (c, h, w) = "image", -1, (specs[0].args.get("cin", 3), cfg.input_size, cfg.input_size)
        elif cut == last:
            kind, tensor, (c, h, w) = "detections", last, specs[cfg.head_convs[-1]].out
        else:
            (tensor,) = _crossing(specs, cut, heads)
            kind, (c, h, w) = "features", specs[tensor].out
            src = _trace(specs, tensor)
            if specs[src].kind != "convolutional":
                note = (f"the cut tensor is {specs[src].kind} {src}'s combination of layers "
                        f"{list(specs[src].inputs)}; step 1 prunes the output of one conv (step 2 prunes its sources)")
            elif src in refused:
                note = f"conv {src} is not pruned: {refused[src]}"
            else:
                conv = src
            earlier = tuple(k for k in convs if k <= cut and k != conv and k not in refused)
        pts.append(CutPoint(j, cut, kind, tensor, conv, earlier, c, h, w, cfg.input_size // h, node, total - node,
                            note))
    channels = {i: specs[i].out[0] for p in pts for i in (*p.earlier_convs, p.conv) if i is not None}
    return CutTable(pts, channels, {c: g for c, g in groups.items() if c in channels},
                    {c: r for c, r in refused.items() if c in convs})


class _DarknetIndex:
    """Index a ModuleDict by darknet layer number."""

    def __init__(self, layers: nn.ModuleDict) -> None:
        self._layers = layers

    def __getitem__(self, i: int) -> nn.Module:
        return self._layers[str(i)]


class NodePart(nn.Module):
    """Darknet layers 0..cut. ``forward`` returns the cut tensor (the image, a feature map) or, when every layer
    is on the node, the raw head outputs."""

    def __init__(self, layers: dict[int, nn.Module], cut_point: CutPoint) -> None:
        super().__init__()
        self.cut, self.tensor, self.kind = cut_point.layer, cut_point.tensor, cut_point.kind
        self.layers = nn.ModuleDict({str(i): m for i, m in layers.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.cut < 0:
            return x
        cache: dict[int, torch.Tensor] = {}
        out, heads = run_layers(_DarknetIndex(self.layers), x, 0, self.cut, cache)
        return heads if self.kind == "detections" else cache[self.tensor]


class EdgePart(nn.Module):
    """Darknet layers cut+1..last: the de-quantized cut tensor in, raw head outputs out."""

    def __init__(self, layers: dict[int, nn.Module], cut_point: CutPoint, last: int) -> None:
        super().__init__()
        self.cut, self.tensor, self.kind, self.last = cut_point.layer, cut_point.tensor, cut_point.kind, last
        self.layers = nn.ModuleDict({str(i): m for i, m in layers.items()})

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        if self.kind == "detections":
            return x  # the node already produced the heads
        _, heads = run_layers(_DarknetIndex(self.layers), x, self.cut + 1, self.last, {self.tensor: x})
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

    ``forward(x)`` = ``edge(interface(node(x)))`` and returns the raw head outputs like the unsplit
    :class:`models.darknet.Darknet`. Where the node sends detections the interface is absent (see
    :func:`models.codec.encode_detections`).
    """

    def __init__(self, node: NodePart, interface: QuantInterface | None, edge: EdgePart, j: int,
                 cfg: DetectorConfig) -> None:
        super().__init__()
        self.j = j
        self.cfg = cfg
        self.table = cut_points(cfg)
        self.cut_point = self.table[j]
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
        per_layer = conv_layer_macs(dict(self.all_layers()), self.cfg)
        cut = self.cut_layer
        return MacReport({i: m for i, m in per_layer.items() if i <= cut},
                         {i: m for i, m in per_layer.items() if i > cut})

    def cut_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensor sent at j (after any pruning), without a forward pass: the channels follow the
        modules as they are now through pools, routes (and their groups) and shortcuts."""
        p = self.cut_point
        if not p.is_split:
            return p.channels, p.height, p.width
        specs = self.cfg.specs()
        ch: dict[int, int] = {-1: specs[0].args.get("cin", 3)}
        for i in range(p.tensor + 1):
            sp, prev = specs[i], ch[i - 1] if i else ch[-1]
            if sp.kind == "convolutional":
                ch[i] = self.layer(i).conv.out_channels
            elif sp.kind == "route":
                ch[i] = sum(ch[k] // sp.args["groups"] for k in sp.inputs)
            else:
                ch[i] = prev
        return ch[p.tensor], p.height, p.width

    def node_convs(self) -> list[int]:
        """Prunable conv layers on the node (heads and refused convs excluded), in darknet order."""
        skip = set(self.cfg.head_convs) | set(self.table.refused)
        return sorted(int(i) for i, m in self.node.layers.items() if isinstance(m, DarknetConv) and int(i) not in skip)

    @property
    def coded_image(self) -> bool:
        """The node sends the image through a lossy image codec (j = 0 with JPEG/WebP)."""
        return isinstance(self.interface, ImageInterface) and self.interface.codec is not None

    @property
    def adapts(self) -> bool:
        """Whether fine-tuning has something to adapt to: a quantized cut, or a lossy coded image (the edge model
        adapts to decoded images under the same rules and budget as a split, so neither side is favoured)."""
        return self.cut_point.is_split or self.coded_image

    def adapted_convs(self, n: int) -> list[int]:
        """Darknet indices of the edge convs that adapt to the cut when fine-tuning: the first ``n`` after it,
        and the conv after any route that reads the cut tensor directly (Tiny-YOLOv3's j=5: route 20 carries
        conv 8's output to conv 21)."""
        layers = self.edge.layers
        convs = sorted(int(k) for k, m in layers.items() if isinstance(m, DarknetConv))
        out = set(convs[:n])
        if n > 0:
            for k, m in layers.items():
                nxt = layers[str(int(k) + 1)] if str(int(k) + 1) in layers else None
                if isinstance(m, RouteLayer) and self.cut_point.tensor in m.sources and isinstance(nxt, DarknetConv):
                    out.add(int(k) + 1)
        return sorted(out)

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, device: torch.device | str, percentile: float,
                  batch_size: int = 64, chunk: int | None = None) -> None:
        """Calibrate the interface's mu and max (Eq. 5) on the node's outputs for ``images`` (N, 3, S, S), taken in
        batches of ``batch_size`` (the percentile's sample is strided per batch); a no-op at j=0 and j=6. The node
        runs ``chunk`` images at a time (default 8 on the CPU, where the activations then stay in cache and no
        large buffer is mapped afresh: measured on 2 cores, 256 images at j=1, 0.65 s -> 0.17 s; the batch on a
        GPU); eval-mode layers treat every image alone, so the features are the same."""
        if self.cut_point.is_split:
            self.eval().to(device, memory_format=torch.channels_last)  # as objectives.device.to_device
            step = chunk or (8 if torch.device(device).type == "cpu" else batch_size)
            feats = []
            with torch.no_grad():  # the node runs once; the passes of ``calibrate`` reuse its outputs
                for i in range(0, len(images), batch_size):
                    batch = images[i:i + batch_size]
                    feats.append(torch.cat([self.node(batch[k:k + step].to(device))
                                            for k in range(0, len(batch), step)]))
            calibrate(self.interface, feats, percentile)

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


def split(model: Darknet, j: int, bits: int = 8, interface: bool = True, copy_model: bool = True,
          recon: str | None = None, image_codec: str | None = None, quality: int = 0) -> SplitModel:
    """Split ``model`` at partition point j of its cut-point table.

    Args:
        model: the unsplit network (left unchanged unless ``copy_model=False``).
        j: partition point, an index of ``cut_points(model.cfg)``.
        bits: interface bit width b (1..8); the image is always sent as 8-bit pixels.
        recon: ``paper`` (Eq. 6, the default), ``midpoint`` or ``centroid`` (see :mod:`models.interface`).
        interface: build the interface enabled; with False the split model equals the unsplit one.
        copy_model: deep-copy the model first so pruning and fine-tuning never touch the baseline.
        image_codec, quality: where the node sends the image (j = 0), a lossy codec of :mod:`models.image_codec`
            and its quality (None: the 8-bit image).

    Returns:
        The split model; its interface still needs :meth:`SplitModel.calibrate` where a feature map is cut.
    """
    table = cut_points(model.cfg)
    if not isinstance(j, int) or isinstance(j, bool) or not 0 <= j < len(table):
        raise ValueError(f"partition j={j!r} not in 0..{len(table) - 1} (the cut points of {model.cfg.name})")
    src = copy.deepcopy(model) if copy_model else model
    if copy_model:
        src.requires_grad_(True)  # the split model is for pruning and fine-tuning (an EMA copy may be frozen)
    cut_point = table[j]
    if image_codec is not None and not cut_point.sends_image:
        raise ValueError(f"image_codec={image_codec!r} at j={j}: only the point that sends the image (j=0) codes it")
    cut = cut_point.layer
    layers = dict(enumerate(src.layers))
    node = NodePart({i: m for i, m in layers.items() if i <= cut}, cut_point)
    edge = EdgePart({i: m for i, m in layers.items() if i > cut}, cut_point, len(layers) - 1)
    if cut_point.sends_image:
        iface: QuantInterface | None = ImageInterface(enabled=interface, codec=image_codec, quality=quality)
    elif cut_point.sends_detections:
        iface = None
    else:
        iface = QuantInterface(bits=bits, enabled=interface, recon=recon)
    sm = SplitModel(node, iface, edge, j, src.cfg)
    sm.train(model.training)
    return sm
