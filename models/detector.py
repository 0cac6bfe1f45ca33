"""The detector as a configuration: which darknet cfg, at which input size and class count, and how its boxes
are parametrized. One frozen, hashable dataclass that the model, the cut-point table, the YOLO head and the
baseline cache all read.

The embedded cfgs (``models/cfg/``) are darknet's own yolov3-tiny.cfg and yolov4-tiny.cfg; any other cfg is a
path. Anchors are in pixels at the cfg's ``[net] width`` (darknet's convention) and scale with the input size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from models.darknet_cfg import DarknetCfg, DarknetError, LayerSpec, layer_specs, parse_cfg, single_tensor_cuts
from models.yolo import BOX_STYLES, YOLOHeadConfig

CFG_DIR = Path(__file__).parent / "cfg"
EMBEDDED = {"yolov3-tiny": CFG_DIR / "yolov3-tiny.cfg", "yolov4-tiny": CFG_DIR / "yolov4-tiny.cfg"}


def cfg_path(name_or_path: str) -> Path:
    """An embedded cfg's name (``yolov3-tiny``, ``yolov4-tiny``) or a path to a ``.cfg`` file."""
    if name_or_path in EMBEDDED:
        return EMBEDDED[name_or_path]
    p = Path(name_or_path).expanduser()
    if not p.is_file():
        raise DarknetError(f"model.cfg={name_or_path!r}: no such file (or one of the embedded cfgs "
                           f"{sorted(EMBEDDED)})")
    return p


@functools.lru_cache(maxsize=32)
def _parsed(path: str) -> DarknetCfg:
    return parse_cfg(Path(path))


@functools.lru_cache(maxsize=64)
def _specs(path: str, size: int, num_classes: int, width: float) -> tuple[LayerSpec, ...]:
    return tuple(layer_specs(_parsed(path), size, num_classes, width))


@dataclass(frozen=True)
class DetectorConfig:
    """A darknet-cfg detector at a given input size and class count.

    Attributes:
        cfg: path of the darknet cfg (see :func:`cfg_path` for the embedded ones).
        num_classes: object classes; the heads' filters follow.
        input_size: square input side in pixels; a positive multiple of the largest head stride.
        width: channel multiplier for every conv but the heads (1.0 is the cfg's network; smaller for tests).
        anchors: every (w, h) anchor in pixels at the cfg's ``[net] width``; None = the cfg's ``[yolo] anchors``.
        box: ``v5`` for a detector this project trains (YOLOv5's size parametrization, centre scale 2); ``darknet``
            for darknet-trained weights (``exp(t) * anchor``, the cfg's ``scale_x_y``).
        bn_eps: batch-norm epsilon.
        partitions: the darknet layers that may end the node part (-1 = none: the node sends the image; the last
            layer = all: it sends detections); None = every single-tensor cut of the graph
            (:func:`models.darknet.single_tensor_cuts`).
    """

    cfg: str
    num_classes: int
    input_size: int
    width: float = 1.0
    anchors: tuple[tuple[float, float], ...] | None = None
    box: str = "darknet"
    bn_eps: float = 1e-5  # assumption: darknet's normalize epsilon (.00001f in blas.c / cudnn path)
    partitions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes={self.num_classes} must be >= 1")
        if not 0 < self.width <= 4:
            raise ValueError(f"width={self.width} must be in (0, 4]")
        if self.box not in BOX_STYLES:
            raise ValueError(f"box={self.box!r} not in {list(BOX_STYLES)}")
        at_net = _specs(self.path, self.net_width, self.num_classes, float(self.width))  # parses and fits the cfg
        strides = [self.net_width // sp.out[1] for sp in at_net if sp.kind == "yolo"]
        if self.input_size < max(strides) or self.input_size % max(strides):
            raise ValueError(f"input_size={self.input_size} must be a positive multiple of {max(strides)} "
                             f"(the largest head stride of {self.name})")
        specs = self.specs()
        n = len(self.cfg_anchors)
        if self.anchors is not None and (len(self.anchors) != n or any(len(a) != 2 or min(a) <= 0
                                                                        for a in self.anchors)):
            raise ValueError(f"anchors={self.anchors} must be {n} positive (w, h) pairs")
        if self.partitions is not None:
            last = len(specs) - 1
            bad = [p for p in self.partitions if p not in single_tensor_cuts(list(specs))]
            if bad or self.partitions[0] != -1 or self.partitions[-1] != last:
                raise ValueError(f"partitions={self.partitions}: must run from -1 to {last} over single-tensor "
                                 f"cuts {single_tensor_cuts(list(specs))}")

    @classmethod
    def from_darknet(cls, cfg: DarknetCfg, size: int | None = None, num_classes: int | None = None,
                     **kw) -> DetectorConfig:
        """The cfg as darknet runs it (its own width/classes unless given)."""
        yolo = next(s for s in cfg.layers if s.kind == "yolo")
        return cls(cfg=cfg.path, num_classes=num_classes or int(yolo.get("classes") or 80),
                   input_size=size or int(cfg.net.get("width") or 416), **kw)

    # ------------------------------------------------------------------ derived, all from the cfg text

    @property
    def path(self) -> str:
        return str(cfg_path(self.cfg))

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def darknet(self) -> DarknetCfg:
        return _parsed(self.path)

    def specs(self) -> tuple[LayerSpec, ...]:
        """Every layer's inputs, output shape and MACs at this size/classes/width (cached, no forward pass)."""
        return _specs(self.path, self.input_size, self.num_classes, float(self.width))

    @property
    def net_width(self) -> int:
        return int(self.darknet.net.get("width") or 416)

    @property
    def yolo_layers(self) -> tuple[int, ...]:
        return tuple(sp.index for sp in self.specs() if sp.kind == "yolo")

    @property
    def head_convs(self) -> tuple[int, ...]:
        """The layers whose outputs are the raw heads (the input of each [yolo]); never pruned."""
        return tuple(self.specs()[i].inputs[0] for i in self.yolo_layers)

    @property
    def cfg_anchors(self) -> tuple[tuple[float, float], ...]:
        sets = {self.specs()[i].args["anchors"] for i in self.yolo_layers}
        if len(sets) != 1:
            raise DarknetError(f"{self.path}: the [yolo] layers list different anchors; one list is supported")
        return tuple((float(w), float(h)) for w, h in sets.pop())

    @property
    def scaled_anchors(self) -> torch.Tensor:
        """(A, 2) anchors in pixels at ``input_size``."""
        a = self.anchors if self.anchors is not None else self.cfg_anchors
        return torch.tensor(a, dtype=torch.float32) * (self.input_size / self.net_width)

    @property
    def head_channels(self) -> int:
        return self.specs()[self.head_convs[0]].out[0]

    def head(self) -> YOLOHeadConfig:
        """Decoding/loss settings: the cfg's masks and strides; centre scale 2 for ``v5``, the cfg's
        ``scale_x_y`` for ``darknet``."""
        specs = self.specs()
        yolo = [specs[i] for i in self.yolo_layers]
        scale = 2.0 if self.box == "v5" else tuple(sp.args["scale_x_y"] for sp in yolo)
        return YOLOHeadConfig(
            num_classes=self.num_classes, anchors=tuple(map(tuple, self.scaled_anchors.tolist())),
            masks=tuple(sp.args["mask"] for sp in yolo),
            strides=tuple(self.input_size // sp.out[1] for sp in yolo), scale_xy=scale, box=self.box)

    def cut_layers(self) -> tuple[int, ...]:
        """The darknet layer that ends the node part at each partition point j (``partitions`` or the graph's
        single-tensor cuts)."""
        return self.partitions if self.partitions is not None else tuple(single_tensor_cuts(list(self.specs())))


def darknet_cfg_text(cfg: DetectorConfig) -> str:
    """The cfg text of ``cfg`` as darknet would read it: the source cfg with each conv's ``filters`` at this width
    and class count, ``[net]`` width/height at the input size, and ``[yolo]`` classes and anchors (in pixels at
    that size) replaced. With :func:`models.darknet.save_darknet` it makes a cfg/weights pair of a model trained
    here (note: darknet decodes boxes with ``exp``, so a ``box="v5"`` model must be loaded back with box=v5)."""
    specs = cfg.specs()
    anchors = cfg.scaled_anchors.tolist()
    anchor_text = ", ".join(f"{w!r},{h!r}" for w, h in anchors)  # repr: the float32 values round-trip exactly
    out, layer, kind = [], -1, None
    for raw in Path(cfg.path).read_text().splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("["):
            kind = line[1:-1].strip().lower()
            layer += kind != "net"
            out.append(raw)
            continue
        key = line.split("=", 1)[0].strip().lower() if "=" in line else None
        if kind == "net" and key in ("width", "height"):
            out.append(f"{key}={cfg.input_size}")
        elif kind == "convolutional" and key == "filters":
            out.append(f"filters={specs[layer].out[0]}")
        elif kind == "yolo" and key == "classes":
            out.append(f"classes={cfg.num_classes}")
        elif kind == "yolo" and key == "anchors":
            out.append(f"anchors = {anchor_text}")
        else:
            out.append(raw)
    return "\n".join(out) + "\n"
