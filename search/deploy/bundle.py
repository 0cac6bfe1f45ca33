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
from models.entropy import EntropyModel, template
from models.prune import load_pruned
from models.split import SplitModel, split

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


def _entropy_readme(spec: dict) -> str:
    m = spec.get("entropy_model")
    if not m:
        return ""
    bits = m["bits"]
    tpl = template(m["kind"], bits)
    terms = ", ".join([f"own ({dy},{dx})" for dy, dx in tpl.own] + [f"parent ({dy},{dx})" for dy, dx in tpl.parent])
    return f"""
## Entropy coding (`{m['kind']}`; `models/entropy.py` is the reference)

The body is the model's CRC-32 (u32 little-endian, {m['crc32']}: `crc32` in interface.json's `entropy_model`)
followed by the words of an rANS coder (u32 little-endian) - constriction's `AnsCoder` (32-bit words, 64-bit
state, 24-bit precision). The model (`entropy_model`) holds, per channel c of the {m['channels']} sent (numbered
in the order they are sent): `order` (the coding order of the channels), `parent` (a channel coded before c, -1:
none), `group` (its table), `term_of_code` (code -> term value) and the tables `cum_u16le_base64`: u16 little-endian
cumulative frequency starts of shape `table_shape` = (groups, contexts, 2^bits), each row starting at 0; a
symbol's 16-bit frequency f16 is the next start minus its own (65536 after the last).

Context of the code at channel c, row y, column x: the terms {terms or 'none (one row per group)'}, in that
order, where (dy, dx) is the term value `term_of_code[code]` at row y - dy, column x - dx of the own channel
(already coded) or of the parent channel (fully coded); 0 outside the map or without a parent. The context number
is the sum of term_i * G^i with G = {tpl.levels}. The symbol's row is `cum[group[c]][context]`.

Coding order: channels in `order`; in each channel the positions by t = 2y + x ascending, then y ascending.
Encoding (the node), starting from state = 0 with an empty word list, takes the symbols in *reverse* coding order;
for each, with f = f16 x 256 and start = cum16 x 256:
if (state >> 40) >= f: append (state & 0xFFFFFFFF) to the words; state >>= 32. Then
state = ((state // f) << 24) | (start + state % f).
At the end, append state's 32-bit words least significant first, leaving out its zero high words (state 0:
nothing). The decoder (the edge) reads the words from the end; it refuses a body whose model CRC differs, whose
length exceeds 4 + 4 x (ceil(C*H*W*16/32) + 2) bytes, or that has words left after the declared codes.
"""


def image_codec_spec(sm: SplitModel) -> dict[str, Any]:
    """What a node needs to produce the coded image: format, quality, encoder settings and the libraries."""
    from models.image_codec import get_image_codec, library_versions

    iface = sm.interface
    c = get_image_codec(iface.codec)
    return {"format": c.name, "quality": iface.quality, "options": dict(c.options), "chroma_subsampling": "4:2:0",
            "frame_kind": c.kind, "libraries": library_versions()}


def _image_readme(spec: dict) -> str:
    ic = spec["image_codec"]
    if ic is None:
        return ""
    enc = spec.get("image_encoder") or {}
    hw = {"accelerator": "a hardware codec (the STM32H7 JPEG peripheral: `HAL_JPEG_Encode` with "
                         f"`ImageQuality = {ic['quality']}`, `ChromaSubsampling = JPEG_420_SUBSAMPLING`, "
                         "`ColorSpace = JPEG_YCBCR_COLORSPACE`; the CPU builds the YCbCr MCU blocks)",
          "camera": f"the camera sensor itself (set its JPEG quality to the setting whose file size is nearest "
                    f"{spec['payload_bytes']} B at this resolution)",
          "cpu": "a software encoder on the node's CPU"}.get(enc.get("runs_on", "cpu"), "a software encoder")
    opts = ", ".join(f"{k}={v}" for k, v in ic["options"].items()) or "none"
    return f"""
## The coded image (j = 0, {ic['format'].upper()} quality {ic['quality']})

The node sends the camera image as a {ic['format'].upper()} file, framed by the 24-byte header above with kind
{ic['frame_kind']} ({'2 = JPEG' if ic['format'] == 'jpeg' else '3 = WebP'}), C, H, W = 3, {spec['cut_shape'][1]},
{spec['cut_shape'][2]}, bits 8, mu = the quality, max 0; the body is the file as the encoder wrote it (the codec
field says whether a lossless codec was applied on top; it is `none` where that would not shrink it).

The search measured it with Pillow {ic['libraries']['Pillow']} (libjpeg-turbo {ic['libraries']['libjpeg']},
libwebp {ic['libraries']['libwebp']}): quality {ic['quality']}, chroma subsampling {ic['chroma_subsampling']},
other settings the library defaults (JPEG: baseline, standard Huffman tables, IJG quality scaling of the Annex K
tables; WebP: lossy, {opts}). Priced on the node as {enc.get('name', '?')}: {hw}. Any encoder with the same
settings gives an image the edge model scores alike, but not necessarily the same bytes (Huffman tables, markers):
check with the reference node (`python -m search.deploy.node`), which encodes exactly as the search did.
"""


def node_readme(spec: dict) -> str:
    c, h, w = spec["cut_shape"]
    kind = spec["kind"]
    codec = spec["codec"]
    level = get_codec(codec["algorithm"]).default_level
    frame_kind = (spec.get("image_codec") or {}).get("frame_kind", 0 if kind != "detections" else 1)
    what = {"image": "the 8-bit RGB input image itself (no node.onnx)" if not spec.get("image_codec") else
            f"the RGB input image as a {spec['image_codec']['format'].upper()} file (no node.onnx)",
            "features": f"the output of node.onnx: a {c}x{h}x{w} float feature map, quantized to {spec['bits']} bits",
            "detections": "the detections decoded from node.onnx's raw heads (anchors, masks and strides in "
                          "interface.json's head), as u16 rows"}[kind]
    return f"""# Split-CNN node: study {spec['study']}, trial {spec['trial']}

Chosen for radio `{spec['radio']}` on node `{spec['platform']['node']}`; mAP@0.5 {spec['mAP50']:.4f} in the search,
{spec['payload_bytes']} payload bytes per image ({codec['name']}).

The node sends {what}.

## Payload (what goes on the air; `models/codec.py` is the reference)

24-byte little-endian header, then the body:

| offset | field | type | this design |
|---|---|---|---|
| 0 | magic | 2 bytes | `SP` |
| 2 | version | u8 | {spec['payload_format_version']} |
| 3 | kind | u8 | {frame_kind} (0 = feature map / raw image, 1 = detections, 2 = JPEG, 3 = WebP) |
| 4 | codec | u8 | 0 none, 1 zlib, 2 zstd, 3 lzma, 4 ans, 5 ans_ctx (here `{codec['algorithm']}`; none if it grows) |
| 5 | bits | u8 | {spec['bits']} |
| 6 | C, H, W | 3 x u16 | {c}, {h}, {w} (detections: N rows, 6, 1) |
| 12 | mu | f32 | {spec['mu']!r} |
| 16 | max | f32 | {spec['max']!r} |
| 20 | crc32 | u32 | zlib CRC-32 of bytes 0..19, continued over the body |

Quantization (Eq. 5, node side): step = max / 2^(bits-1); d = floor((f - mu) / step) clamped to
[-2^(bits-1), 2^(bits-1) - 1]; code = d + 2^(bits-1), in float32 arithmetic. For the image: code = round(255 x
pixel in [0, 1]).

Bit order: codes are taken in C, H, W row-major order (channel slowest); each code contributes its `bits` bits
most significant first, concatenated into one bit stream that fills bytes most significant bit first; the last
byte is padded with zero bits. The packed body is exactly ceil(C*H*W*bits/8) bytes before the codec.

Codec: `{codec['algorithm']}` (zlib: deflate stream with zlib header, level {level}; zstd: a frame with the
content size; lzma: .xz) applied to the packed bytes.

Detections rows (kind 1): x1, y1, x2, y2 in input pixels, class, round(score x 65535), each u16.

The kept channels (`kept_channels` in interface.json) are the indices of the unpruned layer's channels that the
pruned node still computes, in the order they are sent. The edge maps each code through
`reconstruction_table` ({spec['recon']}).
""" + _image_readme(spec) + _bottleneck_readme(spec) + _entropy_readme(spec)


def _bottleneck_readme(spec: dict) -> str:
    b = spec.get("bottleneck")
    if not b:
        return ""
    lo, hi = -2 ** (b["bits"] - 1), 2 ** (b["bits"] - 1) - 1
    return f"""
## The learned bottleneck

`node.onnx` ends in a learned encoder ({b['kernel']}x{b['kernel']} conv, the cut layer's {b['channels']} channels ->
{b['latent']}): its output is the {b['latent']}x{spec['cut_shape'][1]}x{spec['cut_shape'][2]} latent, and the
quantization above with mu = {spec['mu']!r}, max = {spec['max']!r} (step 1) rounds it to the integers
{lo} .. {hi} (code = integer + {hi + 1}). There are no kept channels. `edge.onnx` starts with the matching decoder
({b['latent']} -> {b['channels']} channels), fed the integers (`reconstruction_table`). The `ans` entropy model is
the prior the bottleneck was trained with (one table per latent channel).
"""
