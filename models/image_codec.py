"""Lossy image codecs for the all-in-edge point (j = 0): the node sends a JPEG or WebP of the camera image.

Both come from Pillow (libjpeg-turbo and libwebp in its wheels): one call each way, the quality a parameter, the
bytes ``len()`` of what the encoder returned. Pillow was chosen over simplejpeg because it has both formats behind
one API, is already a dependency, and its encoder settings (quality, subsampling, WebP method) are the libraries'
own. Chroma subsampling is the libraries' default, 4:2:0 for both (JPEG: libjpeg's default below quality 100 as
Pillow passes it; lossy WebP is always 4:2:0), which is also what the STM32 hardware codec is set to in ST's
examples. The WebP method (speed/size trade-off, 0..6) is libwebp's default 4 unless a caller sets it.

A coded image is framed like every payload (:mod:`models.codec`, kind 2 = JPEG, 3 = WebP): the 24-byte header
declares the image's shape, which the decoder checks against the image's own header before it decodes a pixel.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RAW = "raw"  # the 8-bit image as it is (the paper's all-in-edge point); lossless codecs may still compress it


@dataclass(frozen=True)
class ImageCodec:
    """One lossy image format.

    Attributes:
        name: registry name (``jpeg``, ``webp``).
        pil_format: Pillow's format name.
        kind: the payload frame's kind byte (:mod:`models.codec`).
        quality_range: the qualities the library accepts (inclusive).
        options: encoder settings besides the quality, fixed so that a C node can reproduce the stream.
    """

    name: str
    pil_format: str
    kind: int
    quality_range: tuple[int, int]
    options: tuple[tuple[str, object], ...] = ()

    def check_quality(self, quality: int) -> int:
        lo, hi = self.quality_range
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
            raise ValueError(f"{self.name} quality={quality!r} not an integer in {lo}..{hi}")
        return int(quality)

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        """One (H, W, 3) uint8 RGB image -> the encoder's bytes (a complete .jpg / .webp file)."""
        from PIL import Image

        q = self.check_quality(quality)
        a = np.ascontiguousarray(image, dtype=np.uint8)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got shape {a.shape}")
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, self.pil_format, quality=q, **dict(self.options))
        return buf.getvalue()

    def decode(self, data: bytes, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Bytes -> (H, W, 3) uint8 RGB. With ``shape`` (H, W), an image of any other size is refused before its
        pixels are decoded (the declared shape bounds the decoder's work and memory)."""
        from PIL import Image, UnidentifiedImageError

        try:
            im = Image.open(io.BytesIO(bytes(data)), formats=[self.pil_format])
        except Image.DecompressionBombError:
            raise ValueError(f"{self.name} image declares more pixels than Pillow's decompression-bomb limit "
                             f"({Image.MAX_IMAGE_PIXELS})") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"not a {self.name} image: {' '.join(str(e).split())}") from None
        if shape is not None and (im.height, im.width) != tuple(shape):
            raise ValueError(f"{self.name} image is {im.height}x{im.width}, declared {shape[0]}x{shape[1]}")
        try:
            return np.array(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as e:
            raise ValueError(f"{self.name} image does not decode: {e}") from None


IMAGE_CODECS: dict[str, ImageCodec] = {
    "jpeg": ImageCodec("jpeg", "JPEG", 2, (1, 95)),  # Pillow: "values above 95 should be avoided"
    "webp": ImageCodec("webp", "WEBP", 3, (0, 100), (("method", 4),)),  # libwebp's default method
}
BY_KIND = {c.kind: c for c in IMAGE_CODECS.values()}


def get_image_codec(name: str) -> ImageCodec:
    if name not in IMAGE_CODECS:
        raise ValueError(f"image codec {name!r} not in {sorted(IMAGE_CODECS)} (or {RAW!r} for the 8-bit image)")
    return IMAGE_CODECS[name]


def library_versions() -> dict[str, str]:
    """The encoder libraries behind Pillow, for the records and the deploy bundle."""
    import PIL
    from PIL import features

    return {"Pillow": PIL.__version__, "libjpeg": str(features.version("jpg")),
            "libjpeg_turbo": str(features.check_feature("libjpeg_turbo")), "libwebp": str(features.version("webp"))}


def roundtrip(codes: np.ndarray, codec: str, quality: int,
              sizes: Callable[[bytes], None] | None = None) -> np.ndarray:
    """What the edge receives: every image of ``codes`` (N, H, W, 3) uint8 encoded and decoded again.
    ``sizes`` is called with each encoded image's bytes."""
    c = get_image_codec(codec)
    out = np.empty_like(codes)
    for i, img in enumerate(codes):
        data = c.encode(img, quality)
        if sizes is not None:
            sizes(data)
        out[i] = c.decode(data)
    return out
