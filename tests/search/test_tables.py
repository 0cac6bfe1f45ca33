from __future__ import annotations

import shutil

import pytest

from search import measure_codecs, radio_table
from search.config import compose
from search.profiles import CONF_DIR, ConfigError, load_profile


def test_radio_table_covers_every_radio_and_size(capsys):
    rows = radio_table.table((100, 10_000, 86_528))
    assert {r["radio"] for r in rows} >= {"ble4", "ble5", "lte_c4", "wifi", "lte_m1", "nbiot", "lora"}
    assert len(rows) == 3 * len({r["radio"] for r in rows})
    lora_big = [r for r in rows if r["radio"] == "lora" and r["bytes"] == 86_528][0]
    assert not lora_big["feasible"]
    radio_table.main(["--sizes", "1000"])
    out = capsys.readouterr().out
    assert "ble5" in out and "1000" in out


def test_measure_codecs_writes_loadable_profiles(tmp_path, capsys):
    out = tmp_path / "prof"
    measure_codecs.main(["--out", str(out), "--node-scale", "5"])
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    for name in ("zlib", "zstd", "lzma"):
        shutil.copy(out / f"{name}_host.yaml", conf / "codec" / f"{name}_host.yaml")
        p = load_profile("codec", f"{name}_host", conf)
        assert p.compress_cycles_per_byte > 0 and "node_scale=5" in p.source
        assert p.name == f"{name}_host" and p.codec == name  # the profile prices the library's algorithm
    assert "assumption" in capsys.readouterr().out
    # a measured profile is usable by name in the space, next to the shipped one for the same algorithm
    rc = compose(["space.codecs=[zlib,zlib_host]"], config_dir=conf)
    assert rc.space.codecs == ["zlib", "zlib_host"]
    (conf / "codec" / "bad.yaml").write_text("name: bad\ncodec: brotli\n")
    with pytest.raises(ConfigError, match=r"codec='brotli' not in \['ans', 'ans_ctx', 'lzma', 'none', 'zlib', 'zstd'\]"):
        compose(["space.codecs=[bad]"], config_dir=conf)
