"""The cut-point table of a detector (timm's ``feature_info`` pattern): for each partition point j the cut layer and
tensor, the conv step 1 prunes, the earlier convs step 2 may prune, the shape and stride of what crosses, and the
MACs on each side - computed from the cfg's layer graph, without a forward pass. Every other module derives its
column lists and layer numbers from this one table.

Partition points are the darknet layers after which exactly one tensor crosses from node to edge. Tiny-YOLOv3
keeps the paper's seven (docs/design.md, darknet numbering): j=0 nothing on the node (it sends the image); j=1..4
after the max-pools 1, 3, 5, 7; j=5 after conv 8 (its output feeds both max-pool 9 and the route at 20, so it is
the last single-tensor cut); j=6 everything on the node (it sends the detections). Other cfgs use every
single-tensor cut of their graph (or ``model.partition_layers``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.darknet_cfg import LayerSpec
from models.detector import DetectorConfig


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


def conv_layer_macs(model_or_layers, cfg: DetectorConfig) -> dict[int, int]:
    """MACs of every conv layer, read from the modules as they are now (after pruning too); spatial sizes never
    change with channel pruning, so they come from the config's layer specs."""
    specs: tuple[LayerSpec, ...] = cfg.specs()
    layers = model_or_layers.items() if isinstance(model_or_layers, dict) else enumerate(model_or_layers)
    out: dict[int, int] = {}
    for i, layer in layers:
        conv = getattr(layer, "conv", None)
        if conv is not None:
            h, w = specs[i].out[1:]
            kh, kw = conv.kernel_size
            out[i] = h * w * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
    return out
