"""Darknet ``.cfg`` -> ``nn.Module``, and darknet's ``.weights`` files read and written.

Supported sections: ``[net]`` (only ``width``, ``height`` and ``channels`` matter here; darknet's training keys
are accepted and ignored), ``[convolutional]`` (batch_normalize, filters, size, stride, pad/padding, groups,
activation leaky | linear | mish | relu | logistic), ``[maxpool]`` (size, stride; darknet pads right/bottom by
size - 1), ``[route]`` (layers, and ``groups``/``group_id``: take that slice of the channels, as yolov4-tiny
does), ``[shortcut]`` (from, activation), ``[upsample]`` (stride), ``[yolo]`` (mask, anchors, classes, num,
scale_x_y; training keys ignored). Any other section or key raises :class:`DarknetError` with one line naming
the file, the line and the section.

Darknet's layer numbering is kept: ``model.layers[i]`` is darknet's layer i (``[net]`` is not a layer).
``forward`` returns, in cfg order, the raw output of the layer that feeds each ``[yolo]``: (N, A*(5+C), H, W).
Decoding, loss and NMS (:mod:`models.yolo`) take anchors, masks, classes and scale_x_y from the cfg through
:meth:`models.detector.DetectorConfig.head`.

Weights file (darknet's ``save_weights``): int32 major, minor, revision; ``seen`` as int64 when
major*10 + minor >= 2, else int32; then float32 for each convolutional layer in order: with batch norm its
biases (beta), scales (gamma), rolling mean, rolling variance, then the conv weights; without, the conv biases
and weights. A file whose length does not match the cfg is refused, with the floats expected and found.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5  # assumption: the batch-norm epsilon of darknet's GPU path and of common PyTorch ports
ACTIVATIONS = ("leaky", "linear", "mish", "relu", "logistic")
_NET_KEYS = {  # darknet's [net] options (parser.c parse_net_options); all but width/height/channels train only
    "batch", "subdivisions", "width", "height", "channels", "momentum", "decay", "angle", "saturation",
    "exposure", "hue", "learning_rate", "burn_in", "max_batches", "policy", "steps", "scales", "step", "gamma",
    "power", "mosaic", "mixup", "cutmix", "blur", "letter_box", "flip", "adam", "b1", "b2", "eps", "max_crop",
    "min_crop", "aspect", "gaussian_noise", "track", "time_steps", "augment_speed", "sequential_subdivisions",
    "try_fix_nan", "loss_scale", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_mb", "inputs",
    "max_chart_loss", "mosaic_bound", "contrastive", "unsupervised", "ema_alpha", "resize_step", "attention",
    "adversarial_lr", "label_smooth_eps", "use_cuda_graph", "rgb", "equidistant_point", "random",
    "num_sigmas_reject_badlabels", "badlabels_rejection_percentage", "init_sequential_subdivisions",
}
_YOLO_TRAIN_KEYS = {  # [yolo] options that only matter to darknet's training or its own NMS
    "jitter", "ignore_thresh", "truth_thresh", "random", "cls_normalizer", "iou_normalizer", "iou_loss",
    "iou_thresh_kind", "nms_kind", "beta_nms", "resize", "max_delta", "counters_per_class", "label_smooth_eps",
    "objectness_smooth", "iou_thresh", "new_coords", "obj_normalizer", "delta_normalizer", "focal_loss",
    "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm", "embedding_layer",
    "map", "show_details",
}
SECTIONS: dict[str, set[str]] = {
    "net": _NET_KEYS,
    "convolutional": {"batch_normalize", "filters", "size", "stride", "pad", "padding", "groups", "activation"},
    "maxpool": {"size", "stride"},
    "route": {"layers", "groups", "group_id"},
    "shortcut": {"from", "activation"},
    "upsample": {"stride"},
    "yolo": {"mask", "anchors", "classes", "num", "scale_x_y", *_YOLO_TRAIN_KEYS},
}


class DarknetError(ValueError):
    """A cfg or weights file that cannot be used; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class Section:
    kind: str
    options: dict[str, str]
    line: int

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)


@dataclass(frozen=True)
class DarknetCfg:
    """A parsed cfg: the ``[net]`` section and the layer sections in order (``layers[i]`` is darknet's i)."""

    path: str
    net: Section
    layers: tuple[Section, ...]

    @property
    def name(self) -> str:
        return Path(self.path).stem


def parse_cfg(source: str | Path, name: str | None = None) -> DarknetCfg:
    """Parse a darknet cfg file (a path) or its text (``name`` is then used in messages)."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).is_file()):
        path = str(source)
        try:
            text = Path(source).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DarknetError(f"{path}: cannot read the cfg ({type(e).__name__})") from None
    else:
        path, text = name or "<cfg>", str(source)
    sections: list[Section] = []
    kind, opts, start = None, {}, 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"{path}:{n}: malformed section header {raw.strip()!r}")
            if kind is not None:
                sections.append(Section(kind, opts, start))
            kind, opts, start = line[1:-1].strip().lower(), {}, n
            if kind not in SECTIONS:
                raise DarknetError(f"{path}:{n}: [{kind}] is not a supported section; supported: "
                                   f"{', '.join(f'[{s}]' for s in SECTIONS)}")
            continue
        if kind is None:
            raise DarknetError(f"{path}:{n}: {line!r} before any [section]")
        if "=" not in line:
            raise DarknetError(f"{path}:{n}: [{kind}] expected key=value, got {line!r}")
        key, value = (p.strip() for p in line.split("=", 1))
        if key.lower() not in SECTIONS[kind]:
            raise DarknetError(f"{path}:{n}: [{kind}] unknown key {key!r}")
        opts[key.lower()] = value
    if kind is not None:
        sections.append(Section(kind, opts, start))
    if not sections or sections[0].kind != "net":
        raise DarknetError(f"{path}: the first section must be [net]")
    if any(s.kind == "net" for s in sections[1:]):
        raise DarknetError(f"{path}:{[s for s in sections[1:] if s.kind == 'net'][0].line}: a second [net]")
    cfg = DarknetCfg(path, sections[0], tuple(sections[1:]))
    layer_specs(cfg)  # every value checked here, before anything is built
    return cfg


# ---------------------------------------------------------------------------------------------- static specs


@dataclass(frozen=True)
class LayerSpec:
    """One darknet layer, resolved: absolute input layer indices, output shape (C, H, W) and MACs."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    out: tuple[int, int, int]
    macs: int
    args: dict = field(default_factory=dict)


def _int(s: Section, key: str, path: str, default: int | None = None) -> int:
    v = s.get(key)
    if v is None:
        if default is None:
            raise DarknetError(f"{path}:{s.line}: [{s.kind}] needs {key}=")
        return default
    try:
        return int(v)
    except ValueError:
        raise DarknetError(f"{path}:{s.line}: [{s.kind}] {key}={v!r} is not an integer") from None


def _ints(s: Section, key: str, path: str, kind: type = int) -> list:
    v = s.get(key)
    if v is None:
        raise DarknetError(f"{path}:{s.line}: [{s.kind}] needs {key}=")
    try:
        return [kind(x) if kind is float else int(float(x)) for x in re.split(r"[,\s]+", v.strip()) if x]
    except ValueError:
        raise DarknetError(f"{path}:{s.line}: [{s.kind}] {key}={v!r} is not a list of numbers") from None


def layer_specs(cfg: DarknetCfg, size: int | None = None, num_classes: int | None = None,
                width_mult: float = 1.0) -> list[LayerSpec]:
    """Shapes and MACs of every layer for a square input of ``size`` (default the cfg's width), without a
    forward pass; ``num_classes`` replaces the cfg's classes (the heads' filters follow); ``width_mult`` multiplies
    the filters of every conv but the heads (``max(1, round(filters * width))``; 1.0 is the cfg's network)."""
    p = cfg.path
    width = _int(cfg.net, "width", p, 416)
    height = _int(cfg.net, "height", p, width)
    h = w = size if size is not None else width
    if size is None and height != width:
        h = height
    c = _int(cfg.net, "channels", p, 3)
    specs: list[LayerSpec] = []
    heads = _head_layers(cfg)

    def ref(s: Section, i: int, j: int) -> int:
        k = i + j if j < 0 else j
        if not 0 <= k < i:
            raise DarknetError(f"{p}:{s.line}: [{s.kind}] layer {i} refers to layer {j} (absolute {k}), which is "
                               f"not an earlier layer")
        return k

    for i, s in enumerate(cfg.layers):
        prev = (c, h, w) if i == 0 else specs[-1].out
        inputs, macs, args = (i - 1,) if i else (-1,), 0, {}
        if s.kind == "convolutional":
            filters = _int(s, "filters", p)
            if i in heads and num_classes is not None:
                filters = heads[i] * (5 + num_classes)
            elif i not in heads and width_mult != 1.0:
                filters = max(1, int(round(filters * width_mult)))
            k, stride, groups = _int(s, "size", p, 1), _int(s, "stride", p, 1), _int(s, "groups", p, 1)
            pad = k // 2 if _int(s, "pad", p, 0) else _int(s, "padding", p, 0)
            act = (s.get("activation") or "logistic").lower()
            if act not in ACTIVATIONS:
                raise DarknetError(f"{p}:{s.line}: [convolutional] activation={act!r} not in {list(ACTIVATIONS)}")
            if filters < 1 or k < 1 or stride < 1 or groups < 1 or prev[0] % groups or filters % groups:
                raise DarknetError(f"{p}:{s.line}: [convolutional] filters={filters} size={k} stride={stride} "
                                   f"groups={groups} do not fit {prev[0]} input channels")
            oh, ow = (prev[1] + 2 * pad - k) // stride + 1, (prev[2] + 2 * pad - k) // stride + 1
            out = (filters, oh, ow)
            macs = oh * ow * filters * (prev[0] // groups) * k * k
            args = dict(filters=filters, size=k, stride=stride, pad=pad, groups=groups, activation=act,
                        bn=bool(_int(s, "batch_normalize", p, 0)), cin=prev[0])
        elif s.kind == "maxpool":
            k, stride = _int(s, "size", p, 2), _int(s, "stride", p, 2)
            padding = k - 1  # darknet's default: (size - 1), split left/top = padding // 2
            out = (prev[0], (prev[1] + padding - k) // stride + 1, (prev[2] + padding - k) // stride + 1)
            args = dict(size=k, stride=stride, padding=padding)
        elif s.kind == "route":
            srcs = tuple(ref(s, i, j) for j in _ints(s, "layers", p))
            groups, gid = _int(s, "groups", p, 1), _int(s, "group_id", p, 0)
            if not 0 <= gid < groups:
                raise DarknetError(f"{p}:{s.line}: [route] group_id={gid} not in 0..{groups - 1}")
            shapes = [specs[k].out for k in srcs]
            if len({sh[1:] for sh in shapes}) != 1 or any(sh[0] % groups for sh in shapes):
                raise DarknetError(f"{p}:{s.line}: [route] layers {list(srcs)} have shapes {shapes} that cannot be "
                                   f"concatenated in {groups} group(s)")
            out = (sum(sh[0] // groups for sh in shapes), *shapes[0][1:])
            inputs, args = srcs, dict(groups=groups, group_id=gid)
        elif s.kind == "shortcut":
            src = ref(s, i, _int(s, "from", p))
            if specs[src].out != prev:
                raise DarknetError(f"{p}:{s.line}: [shortcut] from layer {src} {specs[src].out} does not match {prev}")
            act = (s.get("activation") or "linear").lower()
            if act not in ACTIVATIONS:
                raise DarknetError(f"{p}:{s.line}: [shortcut] activation={act!r} not in {list(ACTIVATIONS)}")
            out, inputs, args = prev, (i - 1, src), dict(activation=act)
        elif s.kind == "upsample":
            f = _int(s, "stride", p, 2)
            out, args = (prev[0], prev[1] * f, prev[2] * f), dict(stride=f)
        else:  # yolo
            mask, anchors = _ints(s, "mask", p), _ints(s, "anchors", p, float)  # darknet reads anchors with atof
            classes = num_classes if num_classes is not None else _int(s, "classes", p, 80)
            if len(anchors) % 2 or any(m >= len(anchors) // 2 for m in mask):
                raise DarknetError(f"{p}:{s.line}: [yolo] mask={mask} does not index anchors={anchors}")
            if prev[0] != len(mask) * (5 + classes):
                raise DarknetError(f"{p}:{s.line}: [yolo] expects {len(mask)} x (5 + {classes}) = "
                                   f"{len(mask) * (5 + classes)} channels from layer {i - 1}, which has {prev[0]}")
            out = prev
            args = dict(mask=tuple(mask), anchors=tuple(zip(anchors[::2], anchors[1::2], strict=True)),
                        classes=classes, scale_x_y=float(s.get("scale_x_y") or 1.0))
        specs.append(LayerSpec(i, s.kind, tuple(inputs), out, macs, args))
    if not any(sp.kind == "yolo" for sp in specs):
        raise DarknetError(f"{p}: no [yolo] layer")
    return specs


def _head_layers(cfg: DarknetCfg) -> dict[int, int]:
    """Conv layer index -> anchors of the [yolo] it feeds (its filters are anchors x (5 + classes))."""
    out = {}
    for i, s in enumerate(cfg.layers):
        if s.kind == "yolo" and i > 0 and cfg.layers[i - 1].kind == "convolutional":
            out[i - 1] = len(_ints(s, "mask", cfg.path))
    return out


def single_tensor_cuts(specs: list[LayerSpec]) -> list[int]:
    """Positions p (-1 .. last) after which exactly one tensor crosses from layers <= p to layers > p: the
    candidate partition points of a cfg (no route or shortcut spans the cut, and no head output is already made
    on the node side). -1 = the input image; the last layer = everything on the node (it sends detections)."""
    n = len(specs)
    heads = [sp.inputs[0] for sp in specs if sp.kind == "yolo"]  # outputs of the model, needed after any cut
    cuts = []
    for p in range(-1, n):
        crossing = {src for sp in specs[p + 1:] for src in sp.inputs if src <= p} | {h for h in heads if h <= p}
        if p == n - 1 or len(crossing) == 1:
            cuts.append(p)
    return cuts


# ---------------------------------------------------------------------------------------------- modules


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
        from models.detector import DetectorConfig

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


# ---------------------------------------------------------------------------------------------- weights


def _params(model: Darknet) -> list[torch.Tensor]:
    """The tensors of a weights file, in darknet's order."""
    out = []
    for _, m in model.convs():
        if m.bn is not None:
            out += [m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var]
        else:
            out.append(m.conv.bias)
        out.append(m.conv.weight)
    return out


def _header_bytes(major: int, minor: int) -> int:
    return 12 + (8 if major * 10 + minor >= 2 else 4)


def read_weights(model: Darknet, path: str | Path) -> dict[str, int]:
    """Load a darknet weights file into ``model``; returns its header (major, minor, revision, seen)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DarknetError(f"{path}: cannot read the weights ({type(e).__name__})") from None
    if len(blob) < 16:
        raise DarknetError(f"{path}: {len(blob)} B is too short for a darknet weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(blob[:12], dtype="<i4"))
    hb = _header_bytes(major, minor)
    seen = int(np.frombuffer(blob[12:hb], dtype="<i8" if hb == 20 else "<i4")[0])
    body = blob[hb:]
    tensors = _params(model)
    expected = sum(t.numel() for t in tensors)
    if len(body) % 4 or len(body) // 4 != expected:
        found = f"{len(body) // 4}" if len(body) % 4 == 0 else f"{len(body) / 4:.2f}"
        raise DarknetError(f"{path}: the cfg {model.cfg.name} needs {expected} floats after the {hb}-byte header "
                           f"(version {major}.{minor}.{revision}); the file holds {found}")
    values = torch.from_numpy(np.frombuffer(body, dtype="<f4").copy())
    at = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(values[at:at + t.numel()].view_as(t))
            at += t.numel()
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}


def save_darknet(model: Darknet, path: str | Path, version: tuple[int, int, int] = (0, 2, 5), seen: int = 0) -> Path:
    """Write ``model`` as a darknet weights file (the format darknet's ``load_weights`` reads)."""
    major, minor, revision = version
    path = Path(path)
    with open(path, "wb") as f:
        f.write(np.array([major, minor, revision], dtype="<i4").tobytes())
        f.write(np.array([seen], dtype="<i8" if _header_bytes(major, minor) == 20 else "<i4").tobytes())
        for t in _params(model):
            f.write(t.detach().cpu().to(torch.float32).numpy().astype("<f4").tobytes())
    return path


def load_darknet(cfg_path: str | Path, weights_path: str | Path | None = None, size: int | None = None,
                 num_classes: int | None = None) -> Darknet:
    """Build the network of ``cfg_path`` (optionally at another input ``size``), load ``weights_path`` if given,
    and return it in eval mode. It decodes boxes like darknet (``exp(t) * anchor``, the cfg's ``scale_x_y``)."""
    model = Darknet(parse_cfg(Path(cfg_path)), size, num_classes)
    if weights_path is not None:
        read_weights(model, weights_path)
    return model.eval()
