"""A missing optional extra is one line naming the pip install that fixes it (mode=deploy, the reference runtime)."""

from __future__ import annotations

import importlib.util

import pytest

from search import extras
from search.profiles import ConfigError
from search.run import run
from tests.helpers import conf


@pytest.fixture()
def no_onnx(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))


def test_deploy_without_the_extra_names_the_install(no_onnx, tmp_path):
    assert extras.missing("deploy") == ["onnx"] and extras.missing("postgres") == []
    rc = conf("study=quick", f"studies_dir={tmp_path}", "mode=deploy")
    with pytest.raises(ConfigError) as e:
        run(rc)
    assert str(e.value) == ("mode=deploy and the reference runtime (search.deploy) needs the 'deploy' extra (onnx not "
                            "installed): pip install -e '.[deploy]' (or pip install 'splitcnn-search[deploy]')")
    assert not list(tmp_path.iterdir()) or not (tmp_path / "quick").exists()  # nothing was created for it


@pytest.mark.parametrize("module", ["search.deploy.edge", "search.deploy.node"])
def test_runtime_commands_without_the_extra_are_one_line(no_onnx, module, capsys, tmp_path):
    main = importlib.import_module(module).main
    assert main(["--bundle", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the reference runtime needs the 'deploy' extra (onnx not installed): pip install -e "
                   "'.[deploy]'"]
