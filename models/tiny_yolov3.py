"""The paper's Tiny-YOLOv3: darknet's embedded ``yolov3-tiny.cfg`` (:mod:`models.darknet`) with the paper's seven
partition points and the settings this project trains it with.

``model.layers[i]`` is darknet's layer ``i`` (0..23), including the stride-1 max-pool 11, the routes 17/20,
the upsample 19 and the two yolo layers 16/23. See ``docs/tiny_yolov3.md`` for the table it
reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.cut_points import conv_layer_macs  # noqa: F401 - re-exported (generic; it lived here)
from models.darknet import Darknet
from models.detector import DetectorConfig

# Darknet yolov3-tiny anchors (w, h) in pixels at 416 px input; masks 3,4,5 -> 13x13 head, 0,1,2 -> 26x26.
DARKNET_ANCHORS: tuple[tuple[float, float], ...] = (
    (10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)
)
DARKNET_INPUT = 416

NUM_LAYERS = 24
# The paper's partition points j = 0..6 as the last darknet layer on the node (-1: none): j=1..4 after the
# max-pools 1, 3, 5, 7; j=5 after conv 8 (its output feeds max-pool 9 and route 20, so it is the last cut that
# one tensor crosses); j=6 after the last layer. models.cut_points.cut_points derives every other cut fact from it.
PARTITION_LAYERS: tuple[int, ...] = (-1, 1, 3, 5, 7, 8, NUM_LAYERS - 1)
PARTITIONS: tuple[int, ...] = tuple(range(len(PARTITION_LAYERS)))  # the paper's j = 0..6


def TinyYOLOv3Config(num_classes: int = 80, input_size: int = 416, width: float = 1.0,  # noqa: N802 - a config
                     anchors: tuple[tuple[float, float], ...] = DARKNET_ANCHORS) -> DetectorConfig:
    """The paper's Tiny-YOLOv3 as this project trains it: darknet's yolov3-tiny.cfg, the paper's partition
    points, YOLOv5's box parametrization and batch-norm epsilon 1e-4 (the recipe the README's figures measured).

    Args:
        num_classes: number of object classes (80 for COCO, 1 for feet).
        input_size: square input side in pixels; any positive multiple of 32.
        width: channel multiplier for every non-head conv; 1.0 is darknet's network.
        anchors: six (w, h) anchors in pixels *at 416 px*; they are scaled by ``input_size / 416``.
    """
    if len(anchors) != 6:
        raise ValueError(f"anchors={anchors} must be six positive (w, h) pairs")
    return DetectorConfig(cfg="yolov3-tiny", num_classes=num_classes, input_size=input_size, width=width,
                          anchors=tuple(tuple(a) for a in anchors), box="v5", bn_eps=1e-4,
                          partitions=PARTITION_LAYERS)


def TinyYOLOv3(cfg: DetectorConfig | None = None) -> Darknet:  # noqa: N802 - the model's name
    """Tiny-YOLOv3 (``cfg`` defaults to :func:`TinyYOLOv3Config`): ``forward(x)`` takes images (B, 3, S, S) in
    [0, 1] and returns the raw head outputs ``[(B, 3*(5+nc), S/32, S/32), (B, 3*(5+nc), S/16, S/16)]``."""
    return Darknet(cfg or TinyYOLOv3Config())


@dataclass(frozen=True)
class LayerInfo:
    """Static description of one darknet layer: output shape (C, H, W) and MACs."""

    index: int
    kind: str
    out_channels: int
    out_hw: tuple[int, int]
    macs: int


def layer_table(cfg: DetectorConfig) -> list[LayerInfo]:
    """Output shape and MAC count of every darknet layer, from the config (no forward pass)."""
    return [LayerInfo(sp.index, sp.kind, sp.out[0], sp.out[1:], sp.macs) for sp in cfg.specs()]


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
