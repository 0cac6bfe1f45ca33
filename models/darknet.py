"""Darknet networks as ``nn.Module``: the layers of a darknet cfg (:mod:`models.darknet_cfg` parses it) and the
:class:`Darknet` that runs them; :mod:`models.darknet_weights` reads and writes darknet's ``.weights`` files.

Darknet's layer numbering is kept: ``model.layers[i]`` is darknet's layer i (``[net]`` is not a layer).
``forward`` returns, in cfg order, the raw output of the layer that feeds each ``[yolo]``: (N, A*(5+C), H, W).
Decoding, loss and NMS (:mod:`models.yolo`) take anchors, masks, classes and scale_x_y from the cfg through
:meth:`models.detector.DetectorConfig.head`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.darknet_cfg import (  # noqa: F401 - re-exported: the cfg side of a darknet model
    ACTIVATIONS,
    BN_EPS,
    DarknetCfg,
    DarknetError,
    LayerSpec,
    layer_specs,
    parse_cfg,
    single_tensor_cuts,
)
from models.detector import DetectorConfig


def _act(name: str) -> nn.Module:
    return {"leaky": nn.LeakyReLU(0.1), "linear": nn.Identity(), "mish": nn.Mish(), "relu": nn.ReLU(),
            "logistic": nn.Sigmoid()}[name]


class DarknetConv(nn.Sequential):
    """[convolutional]: conv (bias only without batch norm) -> batch norm -> activation."""

    def __init__(self, cin: int, filters: int, size: int, stride: int, pad: int, groups: int, activation: str,
                 bn: bool) -> None:
        mods: list[nn.Module] = [nn.Conv2d(cin, filters, size, stride, pad, groups=groups, bias=not bn)]
        if bn:
            mods.append(nn.BatchNorm2d(filters, eps=BN_EPS, momentum=0.03))
        mods.append(_act(activation))
        super().__init__(*mods)
        self.batch_normalize = bn

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d | None:
        return self[1] if self.batch_normalize else None


class DarknetMaxPool(nn.Module):
    """[maxpool]: darknet pads ``padding`` (default size - 1) cells, ``padding // 2`` of them left/top, with -inf.

    Replicate padding gives the same maxima whenever every window holds a real cell (padding < size, darknet's
    default), and padding is skipped where no window reaches it (a 2x2/2 pool of an even map)."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.padding // 2, self.padding - self.padding // 2
        k, s = self.size, self.stride
        if lo or any((n + self.padding - k) // s != (n - k) // s for n in x.shape[-2:]):
            if self.padding < k:
                x = F.pad(x, (lo, hi, lo, hi), mode="replicate")
            else:
                x = F.pad(x, (lo, hi, lo, hi), value=float("-inf"))
        if x.device.type == "cpu" and not torch.is_grad_enabled() and not torch.jit.is_tracing() \
                and not torch.onnx.is_in_onnx_export():
            # PyTorch's CPU kernel is ~6x faster on channels-last input (measured: 32x16x160x160, 30 ms -> 5 ms);
            # same values. Only without autograd: with the backward pass the layout copies cost what they save.
            y = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s)
            return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()  # keep the layout
        return F.max_pool2d(x, k, s)


class RouteLayer(nn.Module):
    """Concatenation of earlier layers' outputs (group ``group_id`` of ``groups`` channel slices of each)."""

    def __init__(self, sources: tuple[int, ...], groups: int = 1, group_id: int = 0) -> None:
        super().__init__()
        self.sources, self.groups, self.group_id = sources, groups, group_id

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        parts = [x.chunk(self.groups, 1)[self.group_id] if self.groups > 1 else x for x in xs]
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


class ShortcutLayer(nn.Module):
    def __init__(self, source: int, activation: str) -> None:
        super().__init__()
        self.source, self.act = source, _act(activation)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.act(x + other)


class YoloLayer(nn.Identity):
    """[yolo]: marks a raw head output (decoding, loss and NMS live in :mod:`models.yolo`)."""

    def __init__(self, mask: tuple[int, ...], anchors: tuple[tuple[int, int], ...], classes: int,
                 scale_x_y: float) -> None:
        super().__init__()
        self.mask, self.anchors, self.classes, self.scale_x_y = mask, anchors, classes, scale_x_y

    def extra_repr(self) -> str:
        return f"mask={self.mask}, classes={self.classes}, scale_x_y={self.scale_x_y}"


def run_layers(layers, x: torch.Tensor, start: int, end: int, cache: dict[int, torch.Tensor] | None = None,
               keep: set[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run darknet layers ``start..end`` (inclusive) on ``x``, the output of layer ``start - 1``.

    Args:
        layers: indexable by darknet layer number (a ModuleList, or a view of a ModuleDict).
        cache: outputs of earlier layers that routes and shortcuts read; filled as layers run (only the indices
            in ``keep`` when given).

    Returns:
        The output of layer ``end`` and the raw head outputs met on the way (in yolo-layer order).
    """
    cache = {} if cache is None else cache
    cache[start - 1] = x
    heads: list[torch.Tensor] = []
    for i in range(start, end + 1):
        layer = layers[i]
        if isinstance(layer, RouteLayer):
            x = layer([cache[k] for k in layer.sources])
        elif isinstance(layer, ShortcutLayer):
            x = layer(x, cache[layer.source])
        elif isinstance(layer, YoloLayer):
            heads.append(x)
        else:
            x = layer(x)
        if keep is None or i in keep:
            cache[i] = x
    return x, heads


class Darknet(nn.Module):
    """The network of a darknet cfg. ``forward(x)`` with x (N, C, S, S) in [0, 1] returns the raw outputs of the
    layers that feed the ``[yolo]`` layers, in cfg order.

    Built from a :class:`models.detector.DetectorConfig` (``model.cfg``: input size, classes, width, anchors, box
    parametrization); a parsed cfg with ``size``/``num_classes`` is accepted too and decodes like darknet.
    """

    def __init__(self, cfg, size: int | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if isinstance(cfg, DarknetCfg):
            cfg = DetectorConfig.from_darknet(cfg, size, num_classes)
        self.cfg: DetectorConfig = cfg
        self.specs = cfg.specs()
        layers: list[nn.Module] = []
        for sp in self.specs:
            a = sp.args
            if sp.kind == "convolutional":
                conv = DarknetConv(a["cin"], a["filters"], a["size"], a["stride"], a["pad"], a["groups"],
                                   a["activation"], a["bn"])
                if conv.bn is not None:
                    conv.bn.eps = cfg.bn_eps
                layers.append(conv)
            elif sp.kind == "maxpool":
                layers.append(DarknetMaxPool(a["size"], a["stride"], a["padding"]))
            elif sp.kind == "route":
                layers.append(RouteLayer(sp.inputs, a["groups"], a["group_id"]))
            elif sp.kind == "shortcut":
                layers.append(ShortcutLayer(sp.inputs[1], a["activation"]))
            elif sp.kind == "upsample":
                layers.append(nn.Upsample(scale_factor=a["stride"], mode="nearest"))
            else:
                layers.append(YoloLayer(a["mask"], a["anchors"], a["classes"], a["scale_x_y"]))
        self.layers = nn.ModuleList(layers)
        self._keep = {src for sp in self.specs for src in sp.inputs if sp.kind in ("route", "shortcut")}
        self.register_buffer("anchors", cfg.scaled_anchors, persistent=False)
        if cfg.box == "v5":
            self._init_head_bias()

    def _init_head_bias(self) -> None:
        """Objectness prior (YOLOv5-style) for training from scratch: ~8 objects per image, so it starts stable."""
        head = self.cfg.head()
        with torch.no_grad():
            for i, (k, stride) in enumerate(zip(self.cfg.head_convs, head.strides, strict=True)):
                b = self.layers[k].conv.bias.view(len(head.masks[i]), -1)
                b[:, 4] = math.log(8 / (self.cfg.input_size / stride) ** 2)
                b[:, 5:] = math.log(0.6 / max(self.cfg.num_classes - 0.99, 1))

    def convs(self) -> list[tuple[int, DarknetConv]]:
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, DarknetConv)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_layers(self.layers, x, 0, len(self.layers) - 1, keep=self._keep)[1]
