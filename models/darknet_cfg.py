"""Darknet ``.cfg`` files: parsing (:func:`parse_cfg`) and the layer graph (:func:`layer_specs`: per darknet layer
its kind, inputs, output shape and MACs; :func:`single_tensor_cuts`: where exactly one tensor crosses), without
building a module (:mod:`models.darknet` builds it).

Supported sections: ``[net]`` (only ``width``, ``height`` and ``channels`` matter here; darknet's training keys
are accepted and ignored), ``[convolutional]`` (batch_normalize, filters, size, stride, pad/padding, groups,
activation leaky | linear | mish | relu | logistic), ``[maxpool]`` (size, stride; darknet pads right/bottom by
size - 1), ``[route]`` (layers, and ``groups``/``group_id``: take that slice of the channels, as yolov4-tiny
does), ``[shortcut]`` (from, activation), ``[upsample]`` (stride), ``[yolo]`` (mask, anchors, classes, num,
scale_x_y; training keys ignored). Any other section or key raises :class:`DarknetError` with one line naming
the file, the line and the section. Darknet's layer numbering is kept (``[net]`` is not a layer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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
