"""Tiny-YOLOv3 exactly as darknet's ``cfg/yolov3-tiny.cfg``, with darknet layer numbering.

``model.layers[i]`` is darknet's layer ``i`` (0..23), including the stride-1 max-pool 11, the routes 17/20,
the upsample 19 and the two yolo layers 16/23 (identity modules that mark the head outputs). See
``../shared/reference/tiny_yolov3.md`` for the table this module reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.yolo import YOLOHeadConfig

# Darknet yolov3-tiny anchors (w, h) in pixels at 416 px input; masks 3,4,5 -> 13x13 head, 0,1,2 -> 26x26.
DARKNET_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)
)
DARKNET_INPUT = 416

# (kind, args) per darknet layer. conv: (filters, size, stride); "head" = linear 1x1 conv with 3*(5+nc) outputs.
# maxpool: (size, stride); route: layer indices; upsample: factor; yolo: anchor mask.
_LAYERS: tuple[tuple[str, tuple], ...] = (
    ("conv", (16, 3)),  # 0
    ("max", (2, 2)),  # 1
    ("conv", (32, 3)),  # 2
    ("max", (2, 2)),  # 3
    ("conv", (64, 3)),  # 4
    ("max", (2, 2)),  # 5
    ("conv", (128, 3)),  # 6
    ("max", (2, 2)),  # 7
    ("conv", (256, 3)),  # 8
    ("max", (2, 2)),  # 9
    ("conv", (512, 3)),  # 10
    ("max", (2, 1)),  # 11 (stride 1, darknet pads right/bottom)
    ("conv", (1024, 3)),  # 12
    ("conv", (256, 1)),  # 13
    ("conv", (512, 3)),  # 14
    ("head", (1,)),  # 15
    ("yolo", (3, 4, 5)),  # 16
    ("route", (13,)),  # 17
    ("conv", (128, 1)),  # 18
    ("upsample", (2,)),  # 19
    ("route", (19, 8)),  # 20
    ("conv", (256, 3)),  # 21
    ("head", (1,)),  # 22
    ("yolo", (0, 1, 2)),  # 23
)
NUM_LAYERS = len(_LAYERS)
# The paper's partition points j = 0..6 as the last darknet layer on the node (-1: none): j=1..4 after the
# max-pools 1, 3, 5, 7; j=5 after conv 8 (its output feeds max-pool 9 and route 20, so it is the last cut that
# one tensor crosses); j=6 after the last layer. models.split.cut_points derives every other cut fact from it.
PARTITION_LAYERS: tuple[int, ...] = (-1, 1, 3, 5, 7, 8, NUM_LAYERS - 1)


@dataclass(frozen=True)
class TinyYOLOv3Config:
    """Architecture hyper-parameters.

    Attributes:
        num_classes: number of object classes (80 for COCO, 1 for feet).
        input_size: square input side in pixels; any positive multiple of 32.
        width: channel multiplier for every non-head conv; 1.0 is darknet's network. Values below 1
            exist only to make tests fast.
        anchors: six (w, h) anchors in pixels *at 416 px*; they are scaled by ``input_size / 416``.
    """

    num_classes: int = 80
    input_size: int = 416
    width: float = 1.0
    anchors: tuple[tuple[float, float], ...] = field(default=DARKNET_ANCHORS)

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be >= 1")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(f"input_size={self.input_size} must be a positive multiple of 32")
        if not 0 < self.width <= 4:
            raise ValueError(f"width={self.width} must be in (0, 4]")
        if len(self.anchors) != 6 or any(len(a) != 2 or min(a) <= 0 for a in self.anchors):
            raise ValueError(f"anchors={self.anchors} must be six positive (w, h) pairs")

    @property
    def scaled_anchors(self) -> torch.Tensor:
        """(6, 2) anchors in pixels at ``input_size``."""
        return torch.tensor(self.anchors, dtype=torch.float32) * (self.input_size / DARKNET_INPUT)

    @property
    def head_channels(self) -> int:
        return 3 * (5 + self.num_classes)

    def channels(self, filters: int) -> int:
        return max(1, int(round(filters * self.width)))

    def head(self) -> YOLOHeadConfig:
        """The YOLO head's decoding/loss settings (classes, anchors at ``input_size``)."""
        return YOLOHeadConfig(num_classes=self.num_classes, anchors=tuple(map(tuple, self.scaled_anchors.tolist())))


@dataclass(frozen=True)
class LayerInfo:
    """Static description of one darknet layer: output shape (C, H, W) and MACs at full width."""

    index: int
    kind: str
    out_channels: int
    out_hw: tuple[int, int]
    macs: int


def layer_table(cfg: TinyYOLOv3Config) -> list[LayerInfo]:
    """Output shape and MAC count of every darknet layer, computed from the config (no forward pass)."""
    shapes: list[tuple[int, int, int]] = []
    infos: list[LayerInfo] = []
    c, h, w = 3, cfg.input_size, cfg.input_size
    for i, (kind, args) in enumerate(_LAYERS):
        macs = 0
        if kind in ("conv", "head"):
            cin = c
            c = cfg.head_channels if kind == "head" else cfg.channels(args[0])
            k = args[-1] if kind == "conv" else 1
            macs = h * w * c * cin * k * k
        elif kind == "max":
            size, stride = args
            if stride > 1:
                h, w = h // stride, w // stride
        elif kind == "upsample":
            h, w = h * args[0], w * args[0]
        elif kind == "route":
            srcs = [shapes[s] for s in args]
            c = sum(s[0] for s in srcs)
            h, w = srcs[0][1], srcs[0][2]
        elif kind == "yolo":
            pass
        shapes.append((c, h, w))
        infos.append(LayerInfo(i, kind, c, (h, w), macs))
    return infos


def head_convs() -> tuple[int, ...]:
    """Darknet indices of the linear 1x1 convs that produce the raw head outputs (never pruned)."""
    return tuple(i for i, (kind, _) in enumerate(_LAYERS) if kind == "head")


def is_conv(i: int) -> bool:
    """Whether darknet layer ``i`` is a (batch-normalized, prunable) conv layer."""
    return _LAYERS[i][0] == "conv"


class ConvBlock(nn.Sequential):
    """Darknet convolutional layer: conv (no bias) -> batch-norm -> leaky ReLU(0.1)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride=1, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, momentum=0.03, eps=1e-4),
            nn.LeakyReLU(0.1, inplace=True),
        )

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]


class MaxPoolS1(nn.Module):
    """Darknet 2x2/1 max-pool: pad right and bottom by one (replicating, which equals darknet's -inf
    padding for a max), so the spatial size is kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)


class Route(nn.Module):
    """Marker for a darknet route; the concatenation happens in the executor, which owns the cache."""

    def __init__(self, sources: tuple[int, ...]) -> None:
        super().__init__()
        self.sources = sources

    def extra_repr(self) -> str:
        return f"sources={self.sources}"


class YOLOMarker(nn.Identity):
    """Marker for a darknet yolo layer: its input is a raw head output, collected by the executor."""

    def __init__(self, mask: tuple[int, ...]) -> None:
        super().__init__()
        self.mask = mask

    def extra_repr(self) -> str:
        return f"mask={self.mask}"


def build_layers(cfg: TinyYOLOv3Config) -> nn.ModuleList:
    layers: list[nn.Module] = []
    chans: list[int] = []
    c = 3
    for kind, args in _LAYERS:
        if kind == "conv":
            cout = cfg.channels(args[0])
            layers.append(ConvBlock(c, cout, args[1]))
            c = cout
        elif kind == "head":
            layers.append(nn.Conv2d(c, cfg.head_channels, 1, bias=True))
            c = cfg.head_channels
        elif kind == "max":
            layers.append(nn.MaxPool2d(2, 2) if args[1] == 2 else MaxPoolS1())
        elif kind == "upsample":
            layers.append(nn.Upsample(scale_factor=args[0], mode="nearest"))
        elif kind == "route":
            layers.append(Route(args))
            c = sum(chans[s] for s in args)
        elif kind == "yolo":
            layers.append(YOLOMarker(args))
        chans.append(c)
    return nn.ModuleList(layers)


def run_layers(
    layers: nn.ModuleList | list[nn.Module],
    x: torch.Tensor,
    start: int,
    end: int,
    cache: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run darknet layers ``start..end`` (inclusive) on ``x``, the output of layer ``start - 1``.

    Args:
        layers: indexable by darknet layer number (a full ModuleList, or a dict-like view).
        x: input tensor of layer ``start``.
        start, end: darknet layer indices.
        cache: outputs of earlier layers that routes may refer to; filled as layers run.

    Returns:
        The output of layer ``end`` and the raw head outputs met on the way (in yolo-layer order).
    """
    cache = {} if cache is None else cache
    cache[start - 1] = x
    heads: list[torch.Tensor] = []
    for i in range(start, end + 1):
        layer = layers[i]
        if isinstance(layer, Route):
            x = torch.cat([cache[s] for s in layer.sources], 1) if len(layer.sources) > 1 else cache[
                layer.sources[0]]
        elif isinstance(layer, YOLOMarker):
            heads.append(x)
        else:
            x = layer(x)
        cache[i] = x
    return x, heads


class TinyYOLOv3(nn.Module):
    """Tiny-YOLOv3 backbone + two detection heads.

    ``forward(x)`` takes images (B, 3, S, S) in [0, 1] and returns the raw head outputs
    ``[(B, 3*(5+nc), S/32, S/32), (B, 3*(5+nc), S/16, S/16)]`` (the order of darknet's yolo layers 16, 23).
    Decoding, loss and NMS live in :mod:`models.yolo`.
    """

    def __init__(self, cfg: TinyYOLOv3Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or TinyYOLOv3Config()
        self.layers = build_layers(self.cfg)
        self.register_buffer("anchors", self.cfg.scaled_anchors, persistent=False)
        self._init_head_bias()

    def _init_head_bias(self) -> None:
        """Objectness prior (YOLOv5-style): start with ~few objects per image so training is stable."""
        with torch.no_grad():
            for i, stride in zip(head_convs(), (32, 16), strict=True):
                b = self.layers[i].bias.view(3, -1)
                b[:, 4] = math.log(8 / (self.cfg.input_size / stride) ** 2)
                b[:, 5:] = math.log(0.6 / max(self.cfg.num_classes - 0.99, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _, heads = run_layers(self.layers, x, 0, NUM_LAYERS - 1)
        return heads


def conv_layer_macs(layers: nn.ModuleList | list[nn.Module], cfg: TinyYOLOv3Config) -> dict[int, int]:
    """MACs of every conv layer, read from the modules as they are now (after pruning too).

    Spatial sizes never change with channel pruning, so they come from :func:`layer_table`.
    """
    table = layer_table(cfg)
    out: dict[int, int] = {}
    for i, layer in enumerate(layers):
        conv = layer.conv if isinstance(layer, ConvBlock) else layer
        if isinstance(conv, nn.Conv2d):
            h, w = table[i].out_hw
            kh, kw = conv.kernel_size
            out[i] = h * w * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
