from __future__ import annotations

import pytest
import torch

from models import TinyYOLOv3, TinyYOLOv3Config

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def small_cfg() -> TinyYOLOv3Config:
    """A fast, narrow model for tests: 160 px, quarter width, one class."""
    return TinyYOLOv3Config(num_classes=1, input_size=160, width=0.25)


@pytest.fixture()
def small_model(small_cfg) -> TinyYOLOv3:
    torch.manual_seed(0)
    return TinyYOLOv3(small_cfg).eval()
