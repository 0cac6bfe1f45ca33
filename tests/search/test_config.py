"""Compose the real conf/ tree: every option of every group, and a table of bad inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.detector import EMBEDDED
from objectives.costs import EdgeProfile, ProcessorProfile
from search.config import RunConfig
from search.config import compose as run_config_from_overrides
from search.profiles import CONF_DIR, ConfigError, available
from search.storage import make_storage, masked
from search.study import make_sampler as _make_sampler


def test_default_config():
    rc = run_config_from_overrides([])
    assert isinstance(rc, RunConfig)
    assert rc.study.name == "energy_latency" and rc.study.n_trials >= 40
    assert rc.space.partitions == [0, 1, 2, 3, 4, 5, 6] and rc.space.radios == ["ble4", "ble5", "lte_c4", "wifi"]
    assert isinstance(rc.platform.node, ProcessorProfile) and rc.platform.node.name == "cortex_m7"
    assert isinstance(rc.platform.edge, EdgeProfile) and rc.platform.edge.name == "rtx3090"
    assert rc.train.baseline.amp == "bf16" and rc.train.finetune.steps > 0
    assert rc.data.kind == "synthetic" and rc.data.size == 160


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["study", "space", "data", "model", "train", "eval", "storage", "sampler"])
def test_every_option_of_every_group_composes(group, tmp_path):
    for opt in options(group):
        over = [f"{group}={opt}"]
        if group == "data" and opt == "yolo":
            (tmp_path / "d.yaml").write_text("names: [a]\ntrain: x\nval: x\n")
            over.append(f"data.data_yaml={tmp_path / 'd.yaml'}")
        if group == "data" and opt == "coco":
            over += [f"data.{k}={tmp_path}" for k in ("train_json", "val_json", "train_images", "val_images")]
        if group == "model" and opt == "darknet":
            (tmp_path / "my.cfg").write_text(EMBEDDED["yolov4-tiny"].read_text())
            over.append(f"model.cfg={tmp_path / 'my.cfg'}")
        rc = run_config_from_overrides(over)
        assert isinstance(rc, RunConfig), (group, opt)


def test_partitions_come_from_the_models_cut_table():
    assert run_config_from_overrides([]).space.partitions == list(range(7))  # the paper's j = 0..6
    assert run_config_from_overrides(["model=yolov4_tiny"]).space.partitions == list(range(11))
    all_v3 = run_config_from_overrides(["model.partition_layers=null"])
    assert all_v3.space.partitions == list(range(11))  # every single-tensor cut of yolov3-tiny
    assert run_config_from_overrides(["model=yolov4_tiny", "space.partitions=[0,9,10]"]).space.partitions == [0, 9, 10]


@pytest.mark.parametrize("over,match", [
    (["model.cfg=/nonexistent/x.cfg"], r"^model\.cfg='/nonexistent/x\.cfg': no such file"),
    (["space.partitions=[0,7]"], r"^space\.partitions: 7 not in \[0, 1, 2, 3, 4, 5, 6\]"),
    (["model=yolov4_tiny", "model.partition_layers=[-1,3,37]"], r"^model\.partition_layers: partitions="),
    (["model.weights=/x.weights", "model.width=0.5"], r"^model\.width=0\.5 with model\.weights"),
    (["model.box=yolo"], r"^model\.box='yolo' not in"),
])
def test_bad_model_settings_are_one_line(over, match):
    with pytest.raises(ConfigError, match=match) as e:
        run_config_from_overrides(over)
    assert "\n" not in str(e.value)


def test_a_broken_cfg_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(EMBEDDED["yolov3-tiny"].read_text().replace("[upsample]", "[dropout]"))
    with pytest.raises(ConfigError, match=r"^model\.cfg='.*bad\.cfg': .*bad\.cfg:\d+: \[dropout\] is not a supported"):
        run_config_from_overrides(["model=darknet", f"model.cfg={bad}"])


@pytest.mark.parametrize("kind,key", [("node", "platform/node"), ("edge", "platform/edge")])
def test_every_platform_composes(kind, key):
    for name in available(kind):
        rc = run_config_from_overrides([f"{key}={name}"])
        assert getattr(rc.platform, kind).name == name


def test_quick_study_switches_to_tiny_groups():
    rc = run_config_from_overrides(["study=quick"])
    assert rc.study.name == "quick" and rc.data.size == 64 and rc.model.width < 1 and rc.train.finetune.steps <= 8


def test_sampler_from_config():
    rc = run_config_from_overrides(["study.sampler._target_=optuna.samplers.NSGAIISampler",
                                    "~study.sampler.multivariate", "~study.sampler.group",
                                    "~study.sampler.n_startup_trials"])
    assert type(_make_sampler(rc)).__name__ == "NSGAIISampler"
    assert type(_make_sampler(run_config_from_overrides([]))).__name__ == "TPESampler"


BAD = [
    (["space.radios=[zigbee]"], r"space\.radios: 'zigbee' not in \['ble4'"),
    (["space.codecs=[zip]"], r"space\.codecs: 'zip' not in \["),
    (["space.partitions=[7]"], r"space\.partitions: 7 not in \[0, 1, 2, 3, 4, 5, 6\]"),
    (["space.partitions=[]"], r"space\.partitions=\[\] must name at least one"),
    (["space.bits=[0]"], r"space\.bits: 0 not in \[1, 2"),
    (["space.bits=[9]"], r"space\.bits: 9 not in"),
    (["space.cut_keep.low=0"], r"space\.cut_keep: low=0\.0.*0 < low <= high <= 1"),
    (["space.layer_keep.high=1.5"], r"space\.layer_keep: low=0\.1, high=1\.5"),
    (["space.criteria=[magic]"], r"space\.criteria: 'magic' not in \['l1', 'l2', 'bn_scale', 'taylor'\]"),
    (["study.th=-0.1"], r"study\.th=-0\.1 must be >= 0"),
    (["study.n_trials=0"], r"study\.n_trials=0 must be >= 1"),
    (["data=yolo"], r"data\.data_yaml is missing"),
    (["data=yolo", "data.data_yaml=/nonexistent/data.yaml"], r"data\.data_yaml='/nonexistent/data\.yaml': file not found"),
    (["data.size=100"], r"data\.size=100 must be a positive multiple of 32"),
    (["+space.foo=1"], r"space\.foo: unknown key"),
    (["train.baseline.lr=-1"], r"train\.baseline\.lr=-1\.0 must be > 0"),
    (["train.finetune.amp=fp8"], r"train\.finetune\.amp='fp8' not in"),
    (["+train.finetune.stepz=3"], r"train\.finetune\.stepz: unknown key"),
    (["train.adapt.adapt_lr_scale=-1"], r"train\.adapt: adapt_lr_scale=-1\.0 must be >= 0"),
    (["train.adapt.bn_recalib_batches=1.5"], r"train\.adapt\.bn_recalib_batches: expected int"),
    (["+train.adapt.lr=3"], r"train\.adapt\.lr: unknown key; AdaptConfig has"),
    (["mode=train"], r"mode='train' not in \['optimize', 'export', 'report', 'deploy', 'finalize'\]"),
    (["export.fidelity=best"], r"export.fidelity=.best. not in \[.auto., .search., .final.\]"),
    (["finalize.max_points=0"], r"finalize.max_points=0 must be >= 1"),
    (["finalize.margin=2"], r"finalize.margin=2.0 must be an mAP@0.5 distance in \[0, 1\]"),
    (["train.final.steps=0", "train.final.epochs=0"], r"train\.final\.epochs=0\.0 and train\.final\.steps=0: one must be > 0"),
    (["device=tpu"], r"device='tpu' not in"),
    (["platform.node.nj_per_mac=-1"], r"nj_per_mac=-1\.0 must be > 0"),
    (["+platform.node.typo=1"], r"platform\.node\.typo: unknown key"),
    (["model.width=0"], r"model\.width=0\.0 must be in \(0, 4\]"),
    (["eval.nms_iou=1.5"], r"eval\.nms_iou=1\.5 must be in \[0, 1\)"),
    (["train.finetune_when=sometimes"], r"train\.finetune_when='sometimes' not in \['always', 'needed'\]"),
    (["eval.precheck_images=-1"], r"eval\.precheck_images=-1 must be >= 0"),
    (["train.distill.head_steps=-1"], r"train\.distill\.head_steps=-1 must be >= 0"),
    (["train.distill.head_layers=0"], r"train\.distill\.head_layers=0 must be >= 1"),
    (["train.distill.head_lr_scale=0"], r"train\.distill\.head_lr_scale=0\.0 must be > 0"),
    (["eval.precheck_margin=2"], r"eval\.precheck_margin=2\.0 must be in \[0, 1\]"),
    (["storage.kind=mongo"], r"storage\.kind='mongo' not in \['sqlite', 'journal', 'postgres'\]"),
    (["study.name=a/b"], r"study\.name='a/b' must be a non-empty name"),
    (["deploy.idle_timeout_s=0"], r"deploy\.idle_timeout_s=0\.0 must be > 0 \(seconds\)"),
    (["deploy.max_clients=0"], r"deploy\.max_clients=0 must be >= 1"),
    (["space.image_codecs=[avif]"], r"space\.image_codecs: 'avif' not in \['raw', 'jpeg', 'webp'\]"),
    (["space.image_quality.high=100"], r"space\.image_quality: low=5, high=100 must satisfy 1 <= low <= high <= 95 \(jpeg"),
    (["space.image_quality.low=0"], r"space\.image_quality: low=0, high=95 must satisfy 1 <= low"),
    (["space.image_quality.step=7"], r"space\.image_quality\.step=7 must be >= 1 and divide high - low = 90"),
    (["space.image_quality.low=fifty"], r"space\.image_quality\.low: expected int, got 'fifty'"),
    (["space.image_anchors=[52]"], r"space\.image_anchors: 52 is not a quality of space\.image_quality \(5\.\.95 step 5\)"),
    (["platform/node=cortex_m7", "platform.node.image_encoders.jpeg=webp_sw_m7"],
     r"platform\.node\.image_encoders\.jpeg='webp_sw_m7': that profile codes 'webp'"),
    (["platform.node.image_encoders.jpeg=jpeg_magic"], r"platform\.node\.image_encoders='jpeg_magic' not in \['jpeg_camera'"),
    (["platform.node.image_encoders=null"], r"space\.image_codecs has 'jpeg' but platform\.node\.image_encoders \(cortex_m7\) names no profile"),
]


@pytest.mark.parametrize("overrides,match", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_one_line_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        run_config_from_overrides(overrides)
    assert "\n" not in str(e.value)


def test_bad_sampler_target():
    rc = run_config_from_overrides(["study.sampler._target_=optuna.samplers.NopeSampler"])
    with pytest.raises(ConfigError, match=r"study\.sampler\._target_='optuna\.samplers\.NopeSampler': cannot build"):
        _make_sampler(rc)


def test_postgres_url_missing_and_masked(tmp_path, monkeypatch):
    monkeypatch.delenv("SPLITCNN_POSTGRES_URL", raising=False)
    rc = run_config_from_overrides(["storage=postgres"])
    with pytest.raises(ConfigError, match="storage.url is missing"):
        make_storage(rc.storage, "s", tmp_path)
    assert masked("postgresql://user:secret@db.example/x") == "postgresql://user:***@db.example/x"
    monkeypatch.setenv("SPLITCNN_POSTGRES_URL", "postgresql://user:secret@127.0.0.1:1/x")
    with pytest.raises(ConfigError) as e:
        make_storage(rc.storage, "s", tmp_path)
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("args,match", [
    (["space.radios=[zigbee]"], "error: space.radios: 'zigbee' not in"),
    (["data=yolo"], "error: data.data_yaml is missing"),
    (["study.th=-1"], "error: study.th=-1.0 must be >= 0"),
    pytest.param(["device=cuda"], "error: device='cuda' but no CUDA device is available", id="device=cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_cli_exits_nonzero_with_one_line(args, match, tmp_path):
    p = subprocess.run([sys.executable, "-m", "search", *args, f"studies_dir={tmp_path}"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(match), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert not list(tmp_path.iterdir())  # nothing trained or created before the error


def test_cli_corrupt_study_database_is_one_line_and_left_alone(tmp_path):
    db = tmp_path / "quick.db"
    db.write_bytes(b"not a database" * 100)
    p = subprocess.run([sys.executable, "-m", "search", "study=quick", f"studies_dir={tmp_path}"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: storage sqlite:///{db}: cannot open the study database (DatabaseError: file is not a "
                     "database)"]
    assert db.read_bytes() == b"not a database" * 100  # the user's file is never overwritten


def test_postgres_without_driver_names_the_package(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_psycopg(name, *args, **kw):
        if name.startswith(("psycopg", "psycopg2")):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    rc = run_config_from_overrides(["storage=postgres", "storage.url=postgresql://u:sekret@127.0.0.1:1/x"])
    with pytest.raises(ConfigError) as e:
        make_storage(rc.storage, "s", tmp_path)
    msg = str(e.value)
    assert "pip install 'psycopg[binary]'" in msg and "None" not in msg and "sekret" not in msg


@pytest.mark.parametrize("overrides,match", [
    (["storage.heartbeat_interval=-1"], r"storage\.heartbeat_interval=-1 must be >= 0"),
    (["storage.heartbeat_interval=10", "storage.grace_period=5"], r"storage\.grace_period=5 must exceed"),
    (["~storage.url_env"], r"storage\.url_env: missing value"),
    (["~train.finetune.batch_size"], r"train\.finetune\.batch_size: missing value"),
])
def test_every_default_comes_from_conf(overrides, match):
    """The schemas have no Python defaults: a key removed from the YAML is an error naming it."""
    with pytest.raises(ConfigError, match=match):
        run_config_from_overrides(overrides)


def test_unexpected_errors_are_masked_too(monkeypatch):
    """The CLI prints a bug's traceback itself (Hydra's error line, which shows the overrides, never runs), with
    the storage password from the config or its environment variable replaced."""
    from omegaconf import OmegaConf

    from search.__main__ import masked, secrets

    monkeypatch.setenv("MY_PG", "postgresql://u:env-pw@h/db")
    cfg = OmegaConf.create({"storage": {"url": "postgresql://u:cfg-pw@h/db", "url_env": "MY_PG"}})
    hidden = secrets(cfg)
    assert sorted(hidden) == ["cfg-pw", "env-pw"]
    text = "ValueError: could not connect to postgresql://u:cfg-pw@h/db (also tried postgresql://u:env-pw@h/db)"
    out = masked(text, hidden)
    assert "cfg-pw" not in out and "env-pw" not in out and out.count("***") == 2
    assert secrets(OmegaConf.create({"storage": {"url": None, "url_env": "NOPE"}})) == []
