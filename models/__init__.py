"""nn.Modules and model surgery: darknet detectors (Tiny-YOLOv3, yolov4-tiny, any cfg), YOLO head, split, interface
quantization, codec, pruning."""

from models.codec import CODECS, PayloadError, decode, encode_detections, encode_features, packed_nbytes
from models.cut_points import CutPoint, CutTable, cut_points
from models.darknet import Darknet, DarknetError
from models.darknet_weights import load_darknet, save_darknet
from models.detector import DetectorConfig
from models.interface import ImageInterface, QuantInterface, calibrate
from models.prune import CRITERIA, prune
from models.split import SplitModel, split
from models.tiny_yolov3 import PARTITIONS, TinyYOLOv3, TinyYOLOv3Config, layer_table
from models.yolo import YOLOHeadConfig, YOLOLoss, batched_nms, box_iou, nms, postprocess
from models.yolo import decode as decode_heads

__all__ = [
    "CODECS", "CRITERIA", "PARTITIONS", "CutPoint", "CutTable", "Darknet", "DarknetError", "DetectorConfig",
    "ImageInterface", "PayloadError", "QuantInterface",
    "SplitModel", "TinyYOLOv3", "TinyYOLOv3Config", "YOLOHeadConfig", "YOLOLoss", "batched_nms", "box_iou",
    "calibrate", "cut_points", "decode", "decode_heads", "encode_detections", "encode_features", "layer_table",
    "load_darknet", "nms", "packed_nbytes", "postprocess", "prune", "save_darknet", "split",
]
