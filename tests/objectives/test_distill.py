"""Head distillation (objectives/distill.py): the stage lowers the feature loss on a tiny model, trains only the
node and the tapped edge layers, is off at 0 steps, and is part of the settings only when on."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models import TinyYOLOv3, calibrate, prune, split
from objectives.distill import _until, head_distill, tap_layers
from objectives.finetune import finetune
from search.settings import difference, search_settings, settings_record
from tests.helpers import conf, distill, train_cfg
from tests.objectives.conftest import CFG, DATA, QUICK  # noqa: F401 - the shared tiny model, data and budget


def feature_mse(sm, teacher, x, tap):
    with torch.no_grad():
        return float(F.mse_loss(_until(sm.eval(), sm.edge.layers[str(tap)], x),
                                _until(teacher.eval(), teacher.layers[tap], x)))


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    from objectives.fit import fit

    model, _ = fit(TinyYOLOv3(CFG), CFG.head(), 64, data, QUICK, torch.device("cpu"), progress=False)
    return model.eval()


def test_head_distillation_lowers_the_feature_loss_and_trains_only_the_head(data, teacher):
    sm = split(teacher, 3, bits=1)
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    sm.calibrate(x, "cpu", 100.0)
    prune(sm, {sm.cut_point.conv: 0.5}, "l1", example_input=x[:1])
    calibrate(sm.interface, [sm.node(x).detach()])
    tap = tap_layers(sm, 1)[-1]
    assert tap > sm.cut_layer and str(tap) in sm.edge.layers
    before = feature_mse(sm, teacher, x, tap)
    later = {k: copy.deepcopy(m.state_dict()) for k, m in sm.edge.layers.items() if int(k) > tap}
    node0 = copy.deepcopy(sm.node.state_dict())
    cfg = train_cfg(steps=1, batch_size=8, lr=3e-3)  # head_distill takes its own step count
    stats = head_distill(sm, teacher, data, cfg, 40, 1, torch.device("cpu"))
    after = feature_mse(sm, teacher, x, tap)
    assert stats["head_steps"] == 40 and stats["head_loss_last"] < stats["head_loss_first"]
    assert after < 0.8 * before, (before, after)
    # the edge past the tap is the teacher's and stays as it was; the node learned
    assert all(torch.equal(v, later[k][n]) for k, m in sm.edge.layers.items() if int(k) > tap
               for n, v in m.state_dict().items())
    assert any(not torch.equal(v, node0[n]) for n, v in sm.node.state_dict().items() if v.is_floating_point())
    assert all(p.requires_grad for p in sm.parameters())  # a trainable module again
    # off: nothing happens, and the image (j=0) has no cut to distill
    assert head_distill(sm, teacher, data, cfg, 0, 1, torch.device("cpu")) == {"head_steps": 0, "head_seconds": 0.0}
    assert head_distill(split(teacher, 0), teacher, data, cfg, 5, 1, torch.device("cpu"))["head_steps"] == 0


def test_finetune_runs_the_stage_first_and_reports_it(data, teacher):
    sm = split(teacher, 2, bits=2)
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    sm.calibrate(x, "cpu", 100.0)
    _, stats = finetune(sm, teacher, data, train_cfg(steps=3, batch_size=8), torch.device("cpu"),
                        distill(head_steps=5, head_layers=2), progress=False)
    assert stats["head_steps"] == 5 and stats["steps"] == 3 and stats["head_seconds"] > 0


def test_head_distillation_is_in_the_settings_only_when_on():
    off, on = conf(), conf("train.distill.head_steps=20")
    assert "head_steps" not in settings_record(off, "m")["train"]["distill"]  # studies from before it match
    assert settings_record(on, "m")["train"]["distill"]["head_steps"] == 20
    assert difference(search_settings(off, "m"), on, "m") == "train.distill.head_layers: missing vs 1"  # sorted keys
    assert search_settings(off, "m") == search_settings(conf("train.distill.head_layers=3",
                                                             "train.distill.head_lr_scale=2"), "m")
