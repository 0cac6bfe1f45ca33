from __future__ import annotations

import shutil

import pytest

from search.profiles import CONF_DIR, ConfigError, load_profile


@pytest.fixture()
def conf(tmp_path):
    d = tmp_path / "conf"
    shutil.copytree(CONF_DIR, d)
    return d


def edit(conf, rel, old, new):
    p = conf / rel
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("rel,old,new,match", [
    ("radio/ble5.yaml", "p_tx_mw: 24.11", "p_txx_mw: 24.11", r"radio\.p_txx_mw: unknown key"),
    ("radio/ble5.yaml", "p_tx_mw: 24.11", "p_tx_mw: -24.11", r"p_tx_mw=-24.11 must be > 0"),
    ("radio/ble5.yaml", "p_rx_mw: 19.26", "p_rx_mw: fast", r"radio\.p_rx_mw: expected float"),
    ("radio/ble5.yaml", "p_idle_mw: 4.67 ", "", r"radio\.p_idle_mw: missing value"),
    ("radio/ble5.yaml", "header_bytes: 15}", "header_bytes: 15, mtu: 3}", r"radio\.layers\[0\]\.mtu: unknown key"),
    ("radio/lora.yaml", "sf: 7", "sf: 13", r"sf=13 must be in 6\.\.12"),
    ("platform/node/cortex_m7.yaml", "nj_per_mac: 0.88", "nj_per_mac: -0.88", r"nj_per_mac=-0.88 must be > 0"),
    ("platform/edge/rtx3090.yaml", "macs_per_s: 1.0e12", "macs_per_sec: 1.0e12", r"platform\.edge\.macs_per_sec"),
    ("codec/zlib.yaml", "decompress_mb_per_s: 400", "decompress_mb_per_s: -4", r"decompress_mb_per_s=-4"),
])
def test_bad_profile_one_line_naming_the_key(conf, rel, old, new, match):
    edit(conf, rel, old, new)
    kind = {"radio": "radio", "platform": None, "codec": "codec"}[rel.split("/")[0]] or rel.split("/")[1]
    with pytest.raises(ConfigError, match=match) as e:
        load_profile(kind, rel.rsplit("/", 1)[1][:-5], conf)
    assert "\n" not in str(e.value) and rel.rsplit("/", 1)[1] in str(e.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"radio='zigbee' not in \['ble4', 'ble5'"):
        load_profile("radio", "zigbee")
