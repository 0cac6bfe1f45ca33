"""The tiny model and data set the training tests of objectives/ share (test_fit, test_baseline, test_finetune,
test_accuracy)."""

from __future__ import annotations

import pytest

from models import TinyYOLOv3Config
from objectives.data.synthetic import SyntheticConfig, generate
from tests.helpers import conf, train_cfg

CFG = TinyYOLOv3Config(num_classes=1, input_size=64, width=0.125)
DATA = SyntheticConfig(size=64, n_train=32, n_val=8, seed=1, min_foot=12, max_foot=30)
EVAL = conf().eval  # the eval section's mAP settings (conf/eval/default.yaml)
QUICK = train_cfg("baseline", steps=6, batch_size=8, lr=2e-3, amp="bf16", max_minutes=0.0)


@pytest.fixture(scope="module")
def data():
    return generate(DATA, "train", workers=1)
