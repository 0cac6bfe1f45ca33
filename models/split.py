"""Partition a darknet detector at point j into node part, interface and edge part.

Partition points come from the model's cut-point table (:mod:`models.cut_points`): the darknet layers after which
exactly one tensor crosses from node to edge.

The split model reuses the backbone's modules (after a deep copy, so the baseline is never changed): the
node holds darknet layers 0..cut, the edge the layers after it, both addressable by darknet number.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.bottleneck import BottleneckInterface
from models.cut_points import CutPoint, CutTable, conv_layer_macs, cut_points, keep_count  # noqa: F401 - re-exported
from models.darknet import Darknet, DarknetConv, RouteLayer, run_layers
from models.detector import DetectorConfig
from models.interface import ImageInterface, QuantInterface, calibrate


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

    @property
    def bottleneck(self) -> BottleneckInterface | None:
        """The learned bottleneck at the cut (:mod:`models.bottleneck`), where one replaces the quantizer."""
        return self.interface if isinstance(self.interface, BottleneckInterface) else None

    def macs(self) -> MacReport:
        """MACs per darknet layer on each side; a bottleneck's encoder is added to the cut layer's (node) and its
        decoder to the first edge layer's."""
        per_layer = conv_layer_macs(dict(self.all_layers()), self.cfg)
        cut = self.cut_layer
        node = {i: m for i, m in per_layer.items() if i <= cut}
        edge = {i: m for i, m in per_layer.items() if i > cut}
        if self.bottleneck is not None:
            enc, dec = self.bottleneck.macs(self.cut_point.height, self.cut_point.width)
            node[cut] = node.get(cut, 0) + enc
            edge[cut + 1] = edge.get(cut + 1, 0) + dec
        return MacReport(node, edge)

    def cut_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensor sent at j (after any pruning; a bottleneck's latent), without a forward pass: the
        channels follow the modules as they are now through pools, routes (and their groups) and shortcuts."""
        p = self.cut_point
        if not p.is_split:
            return p.channels, p.height, p.width
        if self.bottleneck is not None:
            return self.bottleneck.latent_shape(p.height, p.width)
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
        batches of ``batch_size`` (the percentile's sample is strided per batch); a no-op where the image or the
        detections cross. The node runs ``chunk`` images at a time (default 8 on the CPU, where the activations then
        stay in cache and no large buffer is mapped afresh: measured on 2 cores, 256 images at j=1, 0.65 s -> 0.17 s;
        the batch on a GPU); eval-mode layers treat every image alone, so the features are the same."""
        if self.cut_point.is_split and self.bottleneck is None:  # a bottleneck's latent has a fixed range
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
    def fit_entropy(self, images: torch.Tensor, device: torch.device | str, kinds: tuple[str, ...],
                    chunk: int | None = None) -> None:
        """Fit the interface's entropy models (:mod:`models.entropy`, one per codec in ``kinds``) on the codes of
        ``images`` (N, 3, S, S) - the calibration images, after any fine-tuning; a no-op where the image or the
        detections cross. A bottleneck's ``ans`` model is its learned prior, not a fit."""
        from models.entropy_fit import fit

        if not kinds or not self.cut_point.is_split:
            return
        learned = {"ans": self.bottleneck.prior.entropy_model()} if self.bottleneck is not None else {}
        kinds = tuple(k for k in kinds if k not in learned)
        self.eval().to(device, memory_format=torch.channels_last)
        step = chunk or (8 if torch.device(device).type == "cpu" else 64)
        codes = torch.cat([self.interface.quantize(self.node(images[k:k + step].to(device))).cpu()
                           for k in range(0, len(images), step)]).numpy() if kinds else None
        self.interface.entropy = {**{kind: fit(codes, self.interface.bits, kind) for kind in kinds}, **learned}

    @torch.no_grad()
    def node_peak_activation(self, x: torch.Tensor) -> int:
        """Largest input + output (values, one image) of any leaf layer on the node (a bottleneck's encoder
        included): the node's working RAM in values. ``x``: (N, 3, S, S), only the first image is run."""
        peak = [x[0].numel()]
        if self.bottleneck is not None:
            c, h, w = self.cut_shape()
            p = self.cut_point
            peak.append(self.bottleneck.channels * p.height * p.width + c * h * w)

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
