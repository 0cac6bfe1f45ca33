"""``python -m search mode=deploy``: one complete trial of a study -> ``studies/<study>/deploy/<trial>/``.

The bundle holds ``node.onnx`` (image -> the cut tensor, pruned channels removed; absent where the node sends the
image), ``edge.onnx`` (de-quantized cut tensor -> raw head outputs; absent where the node sends detections; at the
detections cut ``node.onnx`` returns the raw heads), ``interface.json`` (everything both sides must agree on) and a
``README.md`` for whoever implements the node in C. Both ONNX files are checked with ``onnx.checker`` and, run with
onnxruntime on validation images, must equal the torch split within 1e-4 relative, or the bundle is not written.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.bottleneck import BottleneckInterface
from models.codec import FORMAT_VERSION, HEADER_BYTES, get_codec
from models.entropy import EntropyModel
from models.prune import load_pruned
from models.split import SplitModel, split
from search.deploy.readme import node_readme

BUNDLE_VERSION = 1
RTOL = 1e-4


class DeployError(ValueError):
    """A trial that cannot be deployed; one line naming it and why."""


def rebuild(baseline: nn.Module, blob: dict, bits: int, recon: str, image_codec: str | None = None,
            quality: int = 0) -> SplitModel:
    """The trained split model of a kept weights file (see :mod:`search.deploy.store`); ``image_codec`` and
    ``quality``: a coded image's (j=0)."""
    sm = split(baseline, int(blob["j"]), bits=bits, recon=recon, image_codec=image_codec, quality=quality)
    if blob.get("baseline"):  # kept as the baseline's own weights (WeightStore.save's stub)
        return sm.eval()
    if "bottleneck" in blob:  # a learned bottleneck in place of the quantizer (models.bottleneck)
        sm.interface = BottleneckInterface.from_spec(blob["bottleneck"])
    sm = load_pruned(sm, blob["state_dict"]).eval()
    if sm.cut_point.is_split:
        sm.interface.entropy = {name: EntropyModel.from_json(d) for name, d in blob.get("entropy", {}).items()}
    return sm


def cut_channel_indices(sm: SplitModel, kept: dict[str, list[int]]) -> list[int]:
    """Indices, into the unpruned cut tensor's channels, of the channels the node sends (ascending)."""
    p, specs = sm.cut_point, sm.cfg.specs()
    if not p.is_split:
        return list(range(p.channels))

    def chans(i: int) -> list[int]:  # kept indices of layer i's output, in the unpruned numbering
        sp = specs[i]
        if sp.kind == "convolutional":
            return kept.get(str(i), list(range(sp.out[0])))
        if sp.kind in ("maxpool", "upsample"):
            return chans(sp.inputs[0])
        if sp.kind == "route":
            out, off = [], 0
            g, gid = sp.args["groups"], sp.args["group_id"]
            for s in sp.inputs:
                n = specs[s].out[0] // g
                out += [off + k - gid * n for k in chans(s) if gid * n <= k < (gid + 1) * n]
                off += n
            return out
        return chans(sp.inputs[0])

    return chans(p.tensor)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, outputs: list[str]) -> None:
    import onnx

    quiet = io.StringIO()  # the exporter prints its progress
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=outputs,
                          dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},), dynamo=True,
                          external_data=False, verbose=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _check(path: Path, module: nn.Module, x: torch.Tensor) -> float:
    """Largest |onnx - torch| / max|torch| over the outputs on ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = module(x)
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    return max(float(np.abs(g - r.numpy()).max() / max(float(r.abs().max()), 1e-12)) for g, r in zip(got, ref,
                                                                                                     strict=True))


class _Then(nn.Module):
    """``second(first(x))``: a learned bottleneck's encoder after the node, its decoder before the edge."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x):
        return self.second(self.first(x))


def halves(sm: SplitModel) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(what ``node.onnx`` runs, the quantizer between them, what ``edge.onnx`` runs): the node and edge parts and
    the interface; with a learned bottleneck the node ends in its encoder, the quantizer is its latent's (integers,
    step 1) and the edge starts with its decoder."""
    b = sm.bottleneck
    if b is None:
        return sm.node, sm.interface, sm.edge
    return _Then(sm.node, b.encoder), b.wire, _Then(b.decoder, sm.edge)


def recon_table(sm: SplitModel) -> list[float]:
    """The float the edge puts in place of each code 0 .. 2**bits - 1 (Eq. 6, midpoints or centroids; a
    bottleneck's latent integers)."""
    iface = halves(sm)[1]
    codes = torch.arange(2 ** iface.bits, dtype=torch.uint8)
    return [float(v) for v in iface.dequantize(codes)]


def write_bundle(out: Path, sm: SplitModel, blob: dict, info: dict[str, Any], images: torch.Tensor) -> Path:
    """Export ``sm`` (rebuilt from ``blob``) with ``info`` (study, trial, data, costs ...) into ``out``."""
    p = sm.cut_point
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    x = images[:8].float()
    files, errors = {}, {}
    node, iface, edge = halves(sm)
    with torch.no_grad():
        feat = node(x) if not p.sends_image else x
    if not p.sends_image:
        outs = [f"heads_{i}" for i in range(len(sm.cfg.yolo_layers))] if p.sends_detections else ["cut"]
        _export(node, x[:2], tmp / "node.onnx", "image", outs)
        errors["node"] = _check(tmp / "node.onnx", node, x)
        files["node"] = "node.onnx"
    if not p.sends_detections:
        deq = iface.dequantize(iface.quantize(feat)).float()
        _export(edge, deq[:2], tmp / "edge.onnx", "cut", [f"heads_{i}" for i in range(len(sm.cfg.yolo_layers))])
        errors["edge"] = _check(tmp / "edge.onnx", edge, deq)
        files["edge"] = "edge.onnx"
    bad = {k: v for k, v in errors.items() if not v <= RTOL}
    if bad:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployError(f"onnxruntime differs from torch by {bad} (relative) > {RTOL}: bundle not written")
    head = sm.cfg.head()
    c, h, w = sm.cut_shape()
    iface = sm.interface
    spec = {
        "format_version": BUNDLE_VERSION,
        "payload_format_version": FORMAT_VERSION,
        "payload_header_bytes": HEADER_BYTES,
        **info,
        "j": p.j, "cut_layer": p.layer, "kind": p.kind,
        "bits": int(iface.bits) if p.is_split else (8 if p.sends_image else 16),
        "mu": float(iface.mu) if not p.sends_detections else 0.0,
        "max": float(iface.max) if not p.sends_detections else 0.0,
        "recon": getattr(iface, "recon", None) if p.is_split else None,
        "reconstruction_table": recon_table(sm) if p.is_split else None,
        "cut_shape": [c, h, w],
        "kept_channels": (cut_channel_indices(sm, blob.get("kept", {})) if p.is_split and sm.bottleneck is None
                          else None),
        "bottleneck": sm.bottleneck.spec() if sm.bottleneck is not None else None,
        "input_size": sm.cfg.input_size,
        "image_codec": image_codec_spec(sm) if sm.coded_image else None,
        "entropy_model": entropy_spec(sm, info["codec"]["algorithm"]),
        "head": {**{k: v for k, v in asdict(head).items() if k in ("num_classes", "anchors", "masks", "strides",
                                                                     "scale_xy", "box")}},
        "files": files,
        "onnx_vs_torch_max_relative_error": errors,
    }
    (tmp / "interface.json").write_text(json.dumps(spec, indent=1))
    (tmp / "README.md").write_text(node_readme(spec))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def entropy_spec(sm: SplitModel, algorithm: str) -> dict[str, Any] | None:
    """The cut's fitted entropy model where the bundle's codec is ``ans`` / ``ans_ctx`` (else None)."""
    if not get_codec(algorithm).entropy or not sm.cut_point.is_split:  # the image / detections: sent as none
        return None
    model = sm.interface.entropy.get(algorithm)
    if model is None:
        raise DeployError(f"codec {algorithm}: the split model holds no fitted {algorithm} entropy model")
    return model.to_json()


def image_codec_spec(sm: SplitModel) -> dict[str, Any]:
    """What a node needs to produce the coded image: format, quality, encoder settings and the libraries."""
    from models.image_codec import get_image_codec, library_versions

    iface = sm.interface
    c = get_image_codec(iface.codec)
    return {"format": c.name, "quality": iface.quality, "options": dict(c.options), "chroma_subsampling": "4:2:0",
            "frame_kind": c.kind, "libraries": library_versions()}
