"""The README.md of a deploy bundle (:mod:`search.deploy.bundle`): what a C implementer of the node needs - the
frame, the quantization, the coded image's encoder, the learned bottleneck and the entropy coder's tables - written
from the bundle's ``interface.json`` spec."""

from __future__ import annotations

from models.codec import get_codec
from models.entropy import template


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


def _bottleneck_readme(spec: dict) -> str:
    b = spec.get("bottleneck")
    if not b:
        return ""
    lo, hi = -2 ** (b["bits"] - 1), 2 ** (b["bits"] - 1) - 1
    stride = b.get("stride", 1)
    h, w = spec["cut_shape"][1:]
    up = f", a conv to {stride * stride} x {b['channels']} then depth-to-space by {stride}" if stride > 1 else ""
    return f"""
## The learned bottleneck

`node.onnx` ends in a learned encoder ({b['kernel']}x{b['kernel']} conv, stride {stride}, the cut layer's
{b['channels']} channels -> {b['latent']}): its output is the {b['latent']}x{h}x{w} latent, and the quantization
above with mu = {spec['mu']!r}, max = {spec['max']!r} (step 1) rounds it to the integers {lo} .. {hi}
(code = integer + {hi + 1}). There are no kept channels. `edge.onnx` starts with the matching
decoder ({b['latent']} -> {b['channels']} channels{up}), fed the integers (`reconstruction_table`). The `ans` entropy
model is the prior the bottleneck was trained with (one table per latent channel).
"""
