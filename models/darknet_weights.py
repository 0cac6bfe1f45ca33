"""Darknet's ``.weights`` files, read into and written from a :class:`models.darknet.Darknet`.

Weights file (darknet's ``save_weights``): int32 major, minor, revision; ``seen`` as int64 when
major*10 + minor >= 2, else int32; then float32 for each convolutional layer in order: with batch norm its
biases (beta), scales (gamma), rolling mean, rolling variance, then the conv weights; without, the conv biases
and weights. A file whose length does not match the cfg is refused, with the floats expected and found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.darknet import Darknet
from models.darknet_cfg import DarknetError, parse_cfg


def _params(model: Darknet) -> list[torch.Tensor]:
    """The tensors of a weights file, in darknet's order."""
    out = []
    for _, m in model.convs():
        if m.bn is not None:
            out += [m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var]
        else:
            out.append(m.conv.bias)
        out.append(m.conv.weight)
    return out


def _header_bytes(major: int, minor: int) -> int:
    return 12 + (8 if major * 10 + minor >= 2 else 4)


def read_weights(model: Darknet, path: str | Path) -> dict[str, int]:
    """Load a darknet weights file into ``model``; returns its header (major, minor, revision, seen)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DarknetError(f"{path}: cannot read the weights ({type(e).__name__})") from None
    if len(blob) < 16:
        raise DarknetError(f"{path}: {len(blob)} B is too short for a darknet weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(blob[:12], dtype="<i4"))
    hb = _header_bytes(major, minor)
    seen = int(np.frombuffer(blob[12:hb], dtype="<i8" if hb == 20 else "<i4")[0])
    body = blob[hb:]
    tensors = _params(model)
    expected = sum(t.numel() for t in tensors)
    if len(body) % 4 or len(body) // 4 != expected:
        found = f"{len(body) // 4}" if len(body) % 4 == 0 else f"{len(body) / 4:.2f}"
        raise DarknetError(f"{path}: the cfg {model.cfg.name} needs {expected} floats after the {hb}-byte header "
                           f"(version {major}.{minor}.{revision}); the file holds {found}")
    values = torch.from_numpy(np.frombuffer(body, dtype="<f4").copy())
    at = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(values[at:at + t.numel()].view_as(t))
            at += t.numel()
    return {"major": major, "minor": minor, "revision": revision, "seen": seen}


def save_darknet(model: Darknet, path: str | Path, version: tuple[int, int, int] = (0, 2, 5), seen: int = 0) -> Path:
    """Write ``model`` as a darknet weights file (the format darknet's ``load_weights`` reads)."""
    major, minor, revision = version
    path = Path(path)
    with open(path, "wb") as f:
        f.write(np.array([major, minor, revision], dtype="<i4").tobytes())
        f.write(np.array([seen], dtype="<i8" if _header_bytes(major, minor) == 20 else "<i4").tobytes())
        for t in _params(model):
            f.write(t.detach().cpu().to(torch.float32).numpy().astype("<f4").tobytes())
    return path


def load_darknet(cfg_path: str | Path, weights_path: str | Path | None = None, size: int | None = None,
                 num_classes: int | None = None) -> Darknet:
    """Build the network of ``cfg_path`` (optionally at another input ``size``), load ``weights_path`` if given,
    and return it in eval mode. It decodes boxes like darknet (``exp(t) * anchor``, the cfg's ``scale_x_y``)."""
    model = Darknet(parse_cfg(Path(cfg_path)), size, num_classes)
    if weights_path is not None:
        read_weights(model, weights_path)
    return model.eval()
