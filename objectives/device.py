"""Device and mixed-precision helpers shared by training, fine-tuning and evaluation."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A requested device is not available; the message is one line naming ``device``."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name!r} but no CUDA device is available; use device=auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def to_device(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` on ``device`` with its 4-D weights channels-last (in place, as ``Module.to``). The convolutions then
    run channels-last end to end - the same values, faster: measured on 2 CPU cores, Tiny-YOLOv3 at 160 px, batch 32,
    a bf16 training step 268 -> 232 ms and an fp32 inference batch 190 -> 157 ms (README "Speed")."""
    return model.to(device, memory_format=torch.channels_last)


def autocast(device: torch.device, amp: str):
    """bf16 autocast for ``amp='bf16'`` (CPU and CUDA), fp16 for ``'fp16'`` on CUDA; a no-op for ``'none'``."""
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype)
