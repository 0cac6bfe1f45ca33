"""A deploy bundle at run time: onnxruntime sessions and the interface, node and edge halves.

The node half quantizes with the search's own interface (:mod:`models.interface`, Eq. 5 in float32), packs and
compresses with :mod:`models.codec`, exactly as the search measured; the edge half decodes a payload, maps codes
through the bundle's reconstruction table, runs ``edge.onnx`` and decodes/NMSes the heads with the bundle's head
settings (:mod:`models.yolo`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.codec import (
    FORMAT_VERSION,
    KIND_DETECTIONS,
    KIND_IMAGES,
    decode,
    encode_detections,
    encode_features,
    encode_image,
    get_codec,
)
from models.entropy import EntropyError, EntropyModel
from models.image_codec import get_image_codec
from models.interface import ImageInterface, QuantInterface
from models.yolo import YOLOHeadConfig, postprocess
from models.yolo import decode as decode_heads

BUNDLE_VERSION = 1  # interface.json's format_version, written by search.deploy.bundle


class BundleError(ValueError):
    """A bundle that cannot be used; one line."""


class Bundle:
    """``interface.json`` and the ONNX sessions of a bundle folder."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        path = self.folder / "interface.json"
        try:
            self.spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(f"{path}: not a deploy bundle ({type(e).__name__})") from None
        if self.spec.get("format_version") != BUNDLE_VERSION:
            raise BundleError(f"{path}: bundle format {self.spec.get('format_version')}, this runtime reads "
                              f"{BUNDLE_VERSION}")
        if self.spec.get("payload_format_version") != FORMAT_VERSION:
            raise BundleError(f"{path}: payload format {self.spec.get('payload_format_version')}, models.codec "
                              f"writes {FORMAT_VERSION}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sessions = {side: ort.InferenceSession(str(self.folder / name), opts, providers=["CPUExecutionProvider"])
                         for side, name in self.spec["files"].items()}
        h = self.spec["head"]
        self.head = YOLOHeadConfig(num_classes=h["num_classes"], anchors=tuple(map(tuple, h["anchors"])),
                                   masks=tuple(map(tuple, h["masks"])), strides=tuple(h["strides"]),
                                   scale_xy=h["scale_xy"] if isinstance(h["scale_xy"], float) else tuple(h["scale_xy"]),
                                   box=h["box"])
        self.kind = self.spec["kind"]
        self.bits = int(self.spec["bits"])
        self.mu, self.max = float(self.spec["mu"]), float(self.spec["max"])
        # the node's Eq. 5: the search's own interface, at the bundle's bits, mu and max
        self.interface: QuantInterface | None = None
        ic = self.spec.get("image_codec")
        self.image_codec = get_image_codec(ic["format"]) if ic else None  # a coded image (JPEG / WebP)
        self.quality = int(ic["quality"]) if ic else 0
        if self.kind == "image":
            self.interface = ImageInterface()
        elif self.kind == "features":
            self.interface = QuantInterface(bits=self.bits)
            self.interface.set_range(self.mu, self.max)
        table = self.spec.get("reconstruction_table")
        self.table = np.asarray(table, dtype=np.float32) if table is not None else None
        self.algorithm = self.spec["codec"]["algorithm"]
        em = self.spec.get("entropy_model")
        try:
            self.entropy = {em["kind"]: EntropyModel.from_json(em)} if em else {}
        except EntropyError as e:
            raise BundleError(f"{self.folder / 'interface.json'}: {e}") from None
        if get_codec(self.algorithm).entropy and self.kind == "features" and self.algorithm not in self.entropy:
            raise BundleError(f"{self.folder / 'interface.json'}: codec {self.algorithm} but no entropy_model")
        if get_codec(self.algorithm).entropy and self.kind != "features":
            self.algorithm = "none"  # an entropy codec codes feature maps only; the search priced these as sent
        ev = self.spec["eval"]
        self.conf, self.nms_iou, self.max_det = ev["conf_threshold"], ev["nms_iou"], ev["max_det"]
        self.payload_conf = ev["payload_conf_threshold"]

    # ------------------------------------------------------------------ node side

    def node_payload(self, image: np.ndarray) -> bytes:
        """One image (3, S, S) float32 in [0, 1] -> the payload the node sends."""
        x = image[None].astype(np.float32)
        if self.kind == "image":
            codes = self.interface.quantize(torch.from_numpy(x[0]))
            if self.image_codec is not None:  # the node's JPEG / WebP, with the search's library and settings
                hwc = codes.permute(1, 2, 0).numpy()
                data = self.image_codec.encode(hwc, self.quality)
                return encode_image(data, self.image_codec.name, hwc.shape[:2], self.quality, self.algorithm)
            return encode_features(codes, 8, self.mu, self.max, self.algorithm)
        sess = self.sessions["node"]
        out = sess.run(None, {sess.get_inputs()[0].name: x})
        if self.kind == "detections":
            heads = [torch.from_numpy(o) for o in out]
            dets = postprocess(decode_heads(heads, self.head), self.payload_conf, self.nms_iou)[0]
            return encode_detections(dets, self.algorithm)
        return encode_features(self.interface.quantize(torch.from_numpy(out[0][0])), self.bits, self.mu, self.max,
                               self.algorithm, model=self.entropy.get(self.algorithm))

    # ------------------------------------------------------------------ edge side

    def edge_detections(self, payload: bytes) -> np.ndarray:
        """A payload -> detections (n, 6: x1, y1, x2, y2, score, class). Raises models.codec.PayloadError (or
        BundleError for a payload of the wrong shape or kind) on a bad one."""
        d = decode(payload, models=self.entropy)
        if d.kind == KIND_DETECTIONS:
            if self.kind != "detections":
                raise BundleError("a detections payload for a bundle that expects a feature map")
            return d.detections.numpy()
        if self.kind == "detections":
            raise BundleError("a feature-map payload for a bundle whose node sends detections")
        if (d.kind in KIND_IMAGES) != (self.image_codec is not None) or (
                self.image_codec is not None and d.kind != self.image_codec.kind):
            raise BundleError(f"a payload of kind {d.kind} for a bundle that expects "
                              f"{self.image_codec.name if self.image_codec else self.kind}")
        if d.image is not None:
            shape = [3, *d.image.shape[:2]]
            if shape != self.spec["cut_shape"]:
                raise BundleError(f"image payload of shape {shape}, the bundle expects {self.spec['cut_shape']}")
            f = d.image.permute(2, 0, 1).numpy().astype(np.float32) / 255
            return self._edge(f)
        shape = list(d.codes.shape)
        if shape != self.spec["cut_shape"] or d.bits != self.bits:
            raise BundleError(f"payload shape {shape} at {d.bits} bits, the bundle expects {self.spec['cut_shape']} at "
                              f"{self.bits}")
        codes = d.codes.numpy()
        return self._edge(codes.astype(np.float32) / 255 if self.kind == "image" else self.table[codes])

    def _edge(self, f: np.ndarray) -> np.ndarray:
        """The edge model on one de-quantized cut tensor (C, H, W) -> detections."""
        sess = self.sessions["edge"]
        heads = [torch.from_numpy(o) for o in sess.run(None, {sess.get_inputs()[0].name: f[None]})]
        dets = postprocess(decode_heads(heads, self.head), self.conf, self.nms_iou, max_det=self.max_det)[0]
        return dets.numpy()
