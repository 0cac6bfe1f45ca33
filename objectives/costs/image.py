"""Cost of coding the image on the node (JPEG / WebP at j = 0) and of decoding it on the edge.

A profile prices one image codec where it runs (``conf/image_codec/``, every constant with its source, most from
``docs/encoder_costs.md``): CPU cycles per pixel on the node (colour conversion, block preparation and, for a
software encoder, the whole encode), a hardware codec's own pixel rate beside the CPU, the encoder's working RAM,
and the edge's decoding speed. A node profile names the image-codec profile it uses for each format
(``image_encoders``): the STM32H7A3 of ``cortex_m7`` has a hardware JPEG codec, the other MCUs encode in software,
and a camera that outputs JPEG itself is the profile ``jpeg_camera`` (no MCU work; the sensor's settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.image_codec import IMAGE_CODECS
from objectives.costs._checks import check_numbers
from objectives.costs.platform import EdgeProfile, ProcessorProfile, cycles_energy_mj, cycles_latency_ms

RUNS_ON = ("cpu", "accelerator", "camera")


@dataclass(frozen=True)
class ImageCodecProfile:
    """One image codec on the node and its decoder on the edge.

    Attributes:
        name: the profile's name; codec: the format it produces (:data:`models.image_codec.IMAGE_CODECS`).
        runs_on: ``cpu`` (software encoder), ``accelerator`` (a hardware codec fed by the CPU) or ``camera`` (the
            sensor outputs the coded image; the MCU does nothing).
        cycles_per_pixel: node CPU cycles per input pixel.
        accel_pixels_per_s: the hardware codec's throughput (pixels/s); its time is added to the latency and its
            cycles priced at the node's nJ/cycle (no codec current is published: an upper-bound assumption).
        node_ram_bytes: the encoder's working memory besides the image and the output buffer.
        decode_mpixel_per_s: edge decoding speed in megapixels/s.
    """

    name: str
    codec: str
    runs_on: str
    cycles_per_pixel: float
    decode_mpixel_per_s: float
    accel_pixels_per_s: float = 0.0
    node_ram_bytes: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.codec not in IMAGE_CODECS:
            raise ValueError(f"codec={self.codec!r} not in {sorted(IMAGE_CODECS)} (the image format)")
        if self.runs_on not in RUNS_ON:
            raise ValueError(f"runs_on={self.runs_on!r} not in {list(RUNS_ON)}")
        check_numbers(self, ("decode_mpixel_per_s",), ("cycles_per_pixel", "accel_pixels_per_s", "node_ram_bytes"))


def encode_cycles(pixels: int, p: ImageCodecProfile) -> float:
    """Node CPU cycles to encode an image of ``pixels`` pixels."""
    return pixels * p.cycles_per_pixel


def accel_ms(pixels: int, p: ImageCodecProfile) -> float:
    return pixels / p.accel_pixels_per_s * 1e3 if p.accel_pixels_per_s else 0.0


def encode_energy_mj(pixels: int, p: ImageCodecProfile, node: ProcessorProfile) -> float:
    """CPU cycles plus the hardware codec's time at the node's clock, both at its nJ/cycle."""
    return cycles_energy_mj(encode_cycles(pixels, p) + accel_ms(pixels, p) * 1e-3 * node.clock_hz, node)


def encode_latency_ms(pixels: int, p: ImageCodecProfile, node: ProcessorProfile) -> float:
    """CPU time plus the hardware codec's (no overlap assumed: an upper bound; < 0.1 ms at 160 x 160 px)."""
    return cycles_latency_ms(encode_cycles(pixels, p), node) + accel_ms(pixels, p)


def decode_latency_ms(pixels: int, p: ImageCodecProfile, edge: EdgeProfile) -> float:
    return pixels / (p.decode_mpixel_per_s * 1e6) * 1e3
