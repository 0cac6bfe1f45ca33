from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from objectives.costs import (
    CodecProfile,
    CostBreakdown,
    EdgeProfile,
    LayerSpec,
    NodeWork,
    ProcessorProfile,
    RadioProfile,
    compute_energy_mj,
    compute_latency_ms,
    edge_latency_ms,
    evaluate_costs,
    frame_sizes,
    memory_feasibility,
    table1_ratios,
    transfer_cost,
)
from search.profiles import CONF_DIR, available, load_profile

RADIOS = available("radio")


@pytest.fixture(scope="module")
def radios():
    return {r: load_profile("radio", r) for r in RADIOS}


def test_all_named_profiles_exist():
    assert {"ble4", "ble5", "lte_c4", "wifi", "lte_m1", "nbiot", "lora"} <= set(RADIOS)
    assert {"cortex_m7", "cortex_m33", "cortex_m4", "rpi4", "jetson_nano"} <= set(available("node"))
    assert {"rtx3090", "generic_gpu", "measured"} <= set(available("edge"))
    assert {"none", "zlib", "zstd", "lzma"} <= set(available("codec"))


# docs/cost_parameters.md, "Derived transfer figures from the port's stack model"
@pytest.mark.parametrize("radio,nbytes,ms,mj", [
    ("ble5", 10_000, 60, 1.37), ("ble5", 86_528, 523, 11.9), ("nbiot", 10_000, 2400, 330),
    ("lte_c4", 10_000, 2, 4.6)])
def test_reference_transfer_figures_within_10_percent(radios, radio, nbytes, ms, mj):
    c = transfer_cost(nbytes, radios[radio])
    assert c.transfer_ms == pytest.approx(ms, rel=0.10)
    assert c.transfer_energy_mj == pytest.approx(mj, rel=0.10)


def test_ble4_throughput_near_128_kbit(radios):
    c = transfer_cost(100_000, radios["ble4"])
    assert 100_000 * 8 / (c.transfer_ms / 1e3) == pytest.approx(128e3, rel=0.05)


def test_wifi_goodput_near_measured_udp(radios):
    c = transfer_cost(1_000_000, radios["wifi"])
    assert 1_000_000 * 8 / (c.transfer_ms / 1e3) == pytest.approx(30e6, rel=0.15)  # ESP-IDF UDP TX 30 Mbit/s


@pytest.mark.parametrize("radio", RADIOS)
def test_more_bytes_never_cost_less(radios, radio):
    prev = transfer_cost(0, radios[radio])
    assert prev.energy_mj == 0 and prev.latency_ms == 0
    for n in [1, 2, 13, 20, 21, 100, 222, 223, 245, 251, 1000, 1265, 1266, 5000, 12345, 50_000]:
        c = transfer_cost(n, radios[radio])
        assert c.latency_ms >= prev.latency_ms and c.energy_mj >= prev.energy_mj, (radio, n)
        assert c.frames >= prev.frames
        prev = c


@pytest.mark.parametrize("radio", RADIOS)
def test_profile_constants_positive_and_sourced(radio, radios):
    p = radios[radio]
    assert p.p_tx_mw > 0 and p.p_rx_mw >= 0 and p.p_idle_mw >= 0 and p.source
    text = (CONF_DIR / "radio" / f"{radio}.yaml").read_text()
    # every numeric constant line carries a source tag: R, D, S, U or A
    for line in text.splitlines():
        if re.match(r"^\s*[a-z_]+:\s*[-0-9.e]+\s*(#.*)?$", line) and not line.strip().startswith("#"):
            assert re.search(r"#\s*[RDSUA]\b", line), f"{radio}.yaml: unsourced constant: {line.strip()}"


def test_every_platform_and_codec_constant_sourced():
    seen = 0
    for folder in ("platform/node", "platform/edge", "codec", "image_codec"):
        for path in (CONF_DIR / folder).glob("*.yaml"):
            for line in path.read_text().splitlines():
                m = re.match(r"^([a-z_]+):\s*([-0-9.e]+)\s*(#.*)?$", line)
                if m and float(m.group(2)) != 0:
                    # R reported, D derived, S secondary source, U unchecked, A assumption, M measured on this host
                    assert m.group(3) and re.search(r"#\s*[RDSUAM]\b", m.group(3)), f"{path.name}: {line}"
                    seen += folder == "image_codec"
            assert folder != "image_codec" or "source:" in path.read_text(), path.name
    assert seen >= 12  # the image-codec profiles' constants were read


def test_image_encoder_cost_hand_computed():
    """JPEG on the STM32H7A3's hardware codec at 160 x 160 px: 25 c/px of CPU feed plus the codec's 1 px/clock."""
    from objectives.costs.image import decode_latency_ms, encode_energy_mj, encode_latency_ms

    node = load_profile("node", "cortex_m7")
    hw, sw, webp = (load_profile("image_codec", n) for n in ("jpeg_hw_stm32h7", "jpeg_sw_m7", "webp_sw_m7"))
    px = 160 * 160
    assert node.image_encoders == {"jpeg": "jpeg_hw_stm32h7", "webp": "webp_sw_m7"}
    assert encode_energy_mj(px, hw, node) == pytest.approx((25 * px + px) * 0.56e-6)  # 0.3727 mJ
    assert encode_latency_ms(px, hw, node) == pytest.approx(25 * px / 2.8e8 * 1e3 + px / 2.8e8 * 1e3)  # 2.377 ms
    assert encode_energy_mj(px, sw, node) == pytest.approx(110 * px * 0.56e-6)  # 1.577 mJ
    assert encode_energy_mj(px, webp, node) == pytest.approx(825 * px * 0.56e-6)  # 11.83 mJ
    assert encode_energy_mj(px, load_profile("image_codec", "jpeg_camera"), node) == 0.0
    assert decode_latency_ms(px, hw, load_profile("edge", "rtx3090")) == pytest.approx(px / 88e6 * 1e3)
    # in the totals: the encoder's energy and time on the node, the decoder's time on the edge, RAM checked
    work = NodeWork(j=0, node_macs=0, edge_macs=1_000_000, feature_values=0, raw_bytes=2000, payload_bytes=2024,
                    peak_activation_values=3 * px, image_pixels=px)
    none, radio = load_profile("codec", "none"), load_profile("radio", "wifi")
    c = evaluate_costs(work, node, load_profile("edge", "rtx3090"), radio, none, image=hw)
    plain = evaluate_costs(dataclasses.replace(work, image_pixels=0), node, load_profile("edge", "rtx3090"), radio, none)
    assert c.encode_mj == pytest.approx(encode_energy_mj(px, hw, node)) and c.image_codec == "jpeg_hw_stm32h7"
    assert c.node_energy_mj == pytest.approx(plain.node_energy_mj + c.encode_mj)
    assert c.latency_ms == pytest.approx(plain.latency_ms + c.encode_ms + c.image_decode_ms)
    small = dataclasses.replace(node, ram_bytes=3 * px + 2024 + 1000)  # image + output fit, the encoder's 12 KiB not
    assert not evaluate_costs(work, small, load_profile("edge", "rtx3090"), radio, none, image=hw).feasible
    with pytest.raises(ValueError, match="needs its image-codec profile"):
        evaluate_costs(work, node, load_profile("edge", "rtx3090"), radio, none)


def test_fragmentation_hand_computed():
    layers = [LayerSpec("net", 100, 10), LayerSpec("frag", 40, 4, 2)]
    # 200 B app -> packets of 90 B: 90, 90, 20 -> 100, 100, 30 B; frag: 100 = 36 + 38 + 26 -> 40, 40, 28
    assert frame_sizes(200, layers) == [40, 40, 28, 40, 40, 28, 34]
    tb = [LayerSpec("tb", 50, 5, concatenate=True)]
    assert frame_sizes(100, tb) == [50, 50, 15]
    assert frame_sizes(0, layers) == []


def test_transfer_hand_computed():
    r = RadioProfile("toy", [LayerSpec("f", 100, 0)], p_tx_mw=10, p_rx_mw=5, p_idle_mw=1, phy_rate_bps=8000,
                     phy_overhead_bytes=10, ack_s=0.01, ifs_s=0.005, ifs_per_frame=2, wait_s=0.1, per=0.5,
                     setup_s=1, setup_mw=2, count_setup=True)
    c = transfer_cost(150, r)  # frames 100, 50 -> 170 B on air -> 0.17 s tx
    assert c.frames == 2
    assert c.tx_ms == pytest.approx(170 * 2)  # x 1/(1 - PER) = 2
    assert c.rx_ms == pytest.approx(2 * 0.02 * 1e3 * 2)
    assert c.wait_ms == pytest.approx(2 * 0.1 * 1e3 * 2)
    assert c.setup_ms == 1000 and c.latency_ms == pytest.approx(1000 + 340 + 80 + 400)
    assert c.energy_mj == pytest.approx(10 * 0.34 + 5 * 0.08 + 1 * 0.4 + 2 * 1)


def test_lora_time_on_air_and_duty_cycle(radios):
    lora = radios["lora"]
    assert lora.lora.airtime_s(235) == pytest.approx(0.3689, abs=5e-4)  # reference: 368.9 ms per 222 B
    ok = transfer_cost(222, lora)
    assert ok.feasible and ok.tx_ms == pytest.approx(368.9, abs=0.5)
    assert ok.latency_ms >= 368.9 / 0.01 * 0.99  # 1 % duty cycle
    big = transfer_cost(86_528, lora)
    assert not big.feasible and "duty cycle" in big.reason
    relaxed = dataclasses.replace(lora, max_period_s=1e9)
    assert transfer_cost(86_528, relaxed).feasible


def test_setup_and_tail_switches(radios):
    lte = radios["lte_c4"]
    base = transfer_cost(1000, lte)
    full = transfer_cost(1000, dataclasses.replace(lte, count_setup=True, count_tail=True))
    assert full.latency_ms - base.latency_ms == pytest.approx(260)
    assert full.energy_mj - base.energy_mj == pytest.approx(0.26 * 1210 + 11.6 * 1060)


M7 = ProcessorProfile("m7", nj_per_mac=0.88, macs_per_s=1.89e8, nj_per_cycle=0.56, clock_hz=2.8e8,
                      flash_bytes=2 * 2**20, ram_bytes=1.4 * 2**20, quant_cycles_per_value=4)


def test_processing_hand_computed():
    assert compute_energy_mj(1e6, M7) == pytest.approx(0.88)
    assert compute_latency_ms(1.89e8, M7) == pytest.approx(1000)
    with_static = dataclasses.replace(M7, static_mw=10)
    assert compute_energy_mj(1.89e8, with_static) == pytest.approx(0.88 * 189 + 10)
    assert edge_latency_ms(2e9, EdgeProfile("g", macs_per_s=1e12, overhead_ms=1)) == pytest.approx(3)
    assert edge_latency_ms(0, EdgeProfile("g", macs_per_s=1e12, overhead_ms=1)) == 0
    with pytest.raises(ValueError, match="measured"):
        edge_latency_ms(1e9, EdgeProfile("m", measured=True))
    assert edge_latency_ms(1e9, EdgeProfile("m", measured=True), measured_ms=7.5) == 7.5


def test_memory_infeasible_with_reason():
    assert memory_feasibility(1_000_000, 500_000, M7).ok
    w = memory_feasibility(8_850_000, 100, M7)
    assert not w.ok and "flash" in w.reason
    a = memory_feasibility(100, 2_768_896 + 692_224, M7)  # first TY3 layer's in + out at 416 px, int8
    assert not a.ok and "RAM" in a.reason


def test_totals_hand_computed(radios):
    edge = EdgeProfile("e", macs_per_s=1e12, overhead_ms=1)
    zlib = CodecProfile("zlib", "zlib", compress_cycles_per_byte=3460, node_ram_bytes=256 * 1024, decompress_mb_per_s=400)
    work = NodeWork(j=3, node_macs=41_011_200, edge_macs=2_000_000_000, feature_values=400, raw_bytes=50,
                    payload_bytes=74, weight_count=23_000, peak_activation_values=500_000)
    c = evaluate_costs(work, M7, edge, radios["ble5"], zlib)
    tx = transfer_cost(74, radios["ble5"])
    e_compute = 41_011_200 * 0.88e-6
    e_quant = 400 * 4 * 0.56e-6
    e_zip = 50 * 3460 * 0.56e-6
    assert c.node_energy_mj == pytest.approx(e_compute + e_quant + e_zip + tx.energy_mj)
    lat = (41_011_200 / 1.89e8 * 1e3 + 400 * 4 / 2.8e8 * 1e3 + 50 * 3460 / 2.8e8 * 1e3 + tx.latency_ms
           + 50 / 400e6 * 1e3 + 2e9 / 1e12 * 1e3 + 1)
    assert c.latency_ms == pytest.approx(lat)
    assert c.feasible
    d = c.as_dict()
    assert d["node_energy_mj"] == pytest.approx(c.node_energy_mj) and d["radio"] == "ble5"
    lzma = CodecProfile("lzma", "lzma", compress_cycles_per_byte=1e5, node_ram_bytes=94 * 2**20)
    bad = evaluate_costs(work, M7, edge, radios["ble5"], lzma)
    assert not bad.feasible and "RAM" in bad.reason


def test_entropy_codec_costs_hand_computed(radios):
    """An entropy codec is priced per coded value on the node and per decoded value on the edge; its fitted tables
    count against flash, its whole output against RAM; where no feature map is coded it costs nothing."""
    edge = EdgeProfile("e", macs_per_s=1e12, overhead_ms=1)
    ans = load_profile("codec", "ans_ctx")
    assert ans.codec == "ans_ctx" and ans.compress_cycles_per_value > 0 and ans.compress_cycles_per_byte == 0
    work = NodeWork(j=2, node_macs=10_000_000, edge_macs=1_000_000_000, feature_values=51_200, raw_bytes=6_400,
                    payload_bytes=3_500, weight_count=5_000, peak_activation_values=100_000, codec_flash_bytes=65_536)
    c = evaluate_costs(work, M7, edge, radios["wifi"], ans)
    assert c.compress_mj == pytest.approx(51_200 * ans.compress_cycles_per_value * 0.56e-6)
    assert c.compress_ms == pytest.approx(51_200 * ans.compress_cycles_per_value / 2.8e8 * 1e3)
    assert c.decompress_ms == pytest.approx(51_200 / ans.decompress_values_per_s * 1e3)
    assert c.feasible
    too_big = evaluate_costs(dataclasses.replace(work, codec_flash_bytes=M7.flash_bytes), M7, edge, radios["wifi"], ans)
    assert not too_big.feasible and "weights and codec tables need" in too_big.reason
    ram = M7.ram_bytes - 100_000 - ans.node_ram_bytes  # the payload buffer tips it over
    tight = dataclasses.replace(work, payload_bytes=int(ram) + 1)
    assert not evaluate_costs(tight, M7, edge, radios["wifi"], ans).feasible
    assert evaluate_costs(dataclasses.replace(tight, payload_bytes=int(ram) - 1), M7, edge, radios["wifi"], ans).feasible
    # the image (j=0) or the detections: nothing is entropy-coded, nothing is priced or stored
    img = NodeWork(j=0, node_macs=0, edge_macs=1, feature_values=0, raw_bytes=76_800, payload_bytes=76_824,
                   codec_flash_bytes=10 * M7.flash_bytes)
    ci = evaluate_costs(img, M7, edge, radios["wifi"], ans)
    assert ci.compress_mj == 0 and ci.decompress_ms == 0 and ci.feasible


def test_table1_ratios():
    """Hand-made breakdowns whose totals give the paper's Table I (with pruning): x5.74 / x17 energy saving and
    x5.24 / x2.65 speed-up against all-in-edge / all-in-node."""
    def cost(compute_mj, radio_mj, compute_ms, radio_ms, edge_ms):
        return CostBreakdown("wifi", "none", "m7", compute_mj, 0.0, 0.0, radio_mj, compute_ms, 0.0, 0.0, radio_ms,
                             0.0, edge_ms)

    best = cost(1.5, 0.5, 6.0, 3.0, 1.0)            # 2.0 mJ, 10.0 ms
    all_edge = cost(0.0, 11.48, 0.0, 50.0, 2.4)     # 11.48 mJ = 5.74 x 2.0; 52.4 ms = 5.24 x 10.0
    all_node = cost(33.0, 1.0, 26.0, 0.5, 0.0)      # 34.0 mJ = 17 x 2.0; 26.5 ms = 2.65 x 10.0
    t = table1_ratios(best, all_edge, all_node)
    assert (t.energy_saving_vs_edge, t.energy_saving_vs_node) == (pytest.approx(5.74), pytest.approx(17.0))
    assert (t.speedup_vs_edge, t.speedup_vs_node) == (pytest.approx(5.24), pytest.approx(2.65))
    with pytest.raises(ValueError, match="positive energy and latency"):
        table1_ratios(cost(0, 0, 0, 0, 0), all_edge, all_node)


@pytest.mark.parametrize("kwargs,match", [
    (dict(p_tx_mw=-1), "p_tx_mw"), (dict(per=1.0), "per"), (dict(duty_cycle=0), "duty_cycle"),
    (dict(phy_rate_bps=0), "phy_rate_bps"), (dict(layers=[]), "layers"), (dict(ack_s=-0.1), "ack_s")])
def test_radio_profile_validation(kwargs, match):
    base = dict(name="x", layers=[LayerSpec("f", 100)], p_tx_mw=1, p_rx_mw=1, p_idle_mw=1, phy_rate_bps=1e6)
    with pytest.raises(ValueError, match=match):
        RadioProfile(**{**base, **kwargs})


def test_layer_header_must_fit():
    with pytest.raises(ValueError, match="headers"):
        LayerSpec("f", 10, 10)


def test_conf_dir_is_the_repo_conf():
    assert (CONF_DIR / "radio" / "ble5.yaml").is_file() and isinstance(CONF_DIR, Path)


def test_time_edge_ms_measures_the_module():
    import torch

    from objectives.costs.measure import time_edge_ms

    slow = torch.nn.Sequential(*[torch.nn.Conv2d(8, 8, 3, padding=1) for _ in range(6)])
    fast = torch.nn.Identity()
    x = torch.rand(1, 8, 64, 64)
    t_slow, t_fast = time_edge_ms(slow, x, repeats=5), time_edge_ms(fast, x, repeats=5)
    assert t_slow > 0 and t_slow > t_fast


def test_host_codec_profile_scaling():
    from objectives.costs.measure import CodecMeasurement, host_codec_profile, measure_codec

    m = CodecMeasurement("zlib", 6, 1000, 400, host_compress_s_per_byte=20e-9, host_decompress_mb_per_s=300)
    p = host_codec_profile(m, host_clock_hz=3e9, node_scale=10, node_ram_bytes=1024)
    assert p.compress_cycles_per_byte == pytest.approx(20e-9 * 3e9 * 10)
    assert p.decompress_mb_per_s == 300 and "node_scale=10" in p.source
    real = measure_codec("zstd", bytes(range(256)) * 20, repeats=2)
    assert real.level == 3 and real.host_compress_s_per_byte > 0 and real.compressed_bytes < real.raw_bytes
