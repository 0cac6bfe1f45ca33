"""From the quick study to a running split: kept weights, the deploy bundle (ONNX checked with onnxruntime), the
reference edge server and node, the wire format against the README's description, robustness and a load test."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import onnx
import pytest
import torch

from models.codec import CODECS
from search.deploy.edge import EdgeServer
from search.deploy.node import load_images, run
from search.deploy.protocol import ERROR, OK, REQUEST, REQUEST_MAGIC, Client, parse_detections, request
from search.deploy.runtime import Bundle
from search.deploy.store import file_name
from search.record import StudyRecord, TrialRecord, anchor_keys, front_keys
from tests.helpers import readme_entropy_body, write_yolo
from tests.search.test_study import QUICK, cli, load


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    studies = tmp_path_factory.mktemp("d") / "studies"
    # the anchors (enqueued with the first codec) are entropy-coded: a feature cut's bundle carries the model
    space = ("space.codecs=[ans_ctx,none,zlib]", "space.image_codecs=[raw,webp]", "space.image_anchors=[30]")
    cli(studies, "study.enqueue_baselines=true", "study.n_trials=9", *space)
    s = load(studies)
    recs = {t.number: TrialRecord.from_trial(t) for t in s.get_trials()}
    by_j = {}
    for n, r in sorted(recs.items()):
        if r.is_primary and r.accuracy is not None:
            by_j.setdefault(r.accuracy.key if r.accuracy.image_codec else r.accuracy.j, n)
    p = cli(studies, "mode=deploy", *space)
    best = int(p.stdout.split("deploy: trial ")[1].split()[0])
    entropy = next(n for n, r in sorted(recs.items()) if r.is_primary and r.accuracy is not None
                   and r.codec == "ans_ctx" and 0 < r.accuracy.j < 6 and r.accuracy.feature_values)
    for j in (0, 6, "j=0;img=webp;q=30"):
        cli(studies, "mode=deploy", f"deploy.trial={by_j[j]}", *space)
    cli(studies, "mode=deploy", f"deploy.trial={entropy}", *space)
    # deploying reuses the study's cached baseline: no second baseline is trained
    assert len(list((studies / "cache").glob("baseline-*.pt"))) == 1
    spec = json.loads((studies / "quick" / "deploy" / str(best) / "interface.json").read_text())
    assert spec["model"] == StudyRecord.of(s).model
    return studies, s, {"best": best, "image": by_j[0], "detections": by_j[6], "coded": by_j["j=0;img=webp;q=30"],
                        "entropy": entropy}


class Server:
    """The edge server on a free loopback port, in a thread of its own."""

    def __init__(self, bundle: Bundle, max_frame: int | None = None, **limits) -> None:
        self.edge = EdgeServer(bundle, max_frame, **limits)
        got = threading.Event()
        self.loop = asyncio.new_event_loop()

        def ready(port):
            self.port = port
            got.set()

        threading.Thread(target=lambda: self.loop.run_until_complete(self.edge.serve("127.0.0.1", 0, ready)),
                         daemon=True).start()
        assert got.wait(30)


def bundle_dir(studies, n):
    return studies / "quick" / "deploy" / str(n)


def test_kept_weights_are_the_front_and_the_anchors(study):
    studies, s, _ = study
    keep = front_keys(s) | anchor_keys(s)
    files = {f.name for f in (studies / "quick" / "models").glob("*.pt")}
    assert files == {file_name(k) for k in keep} and len(files) >= 7  # j = 0..6 unpruned + the front
    blobs = [torch.load(studies / "quick" / "models" / f, weights_only=True) for f in sorted(files)]
    # a split's own weights with its fitted entropy models (the space has ans_ctx); the baseline's unchanged models
    # (j=0, coded images kept as they are, j=6) as stubs
    assert all(set(b) == ({"key", "j", "kept", "baseline"} if b["j"] in (0, 6) else
                          {"key", "j", "state_dict", "kept", "entropy"}) for b in blobs)
    assert all(set(b["entropy"]) == {"ans_ctx"} for b in blobs if b["j"] not in (0, 6))


@pytest.mark.parametrize("which", ["best", "image", "detections", "coded", "entropy"])
def test_bundle_is_checked_onnx_and_the_runtime_reproduces_the_search(study, which):
    studies, s, trials = study
    folder = bundle_dir(studies, trials[which])
    spec = json.loads((folder / "interface.json").read_text())
    t = s.trials[trials[which]]
    rec = TrialRecord.from_trial(t)
    assert spec["trial"] == t.number and spec["key"] == rec.accuracy.key and spec["mAP50"] == rec.mAP50
    assert spec["kind"] == {"best": spec["kind"], "image": "image", "detections": "detections", "coded": "image",
                            "entropy": "features"}[which]
    assert (spec["image_codec"] is not None) == (which == "coded") or which == "best"
    if which == "coded":  # the node's encoder, named and priced, and the README says how to produce the stream
        assert spec["image_codec"]["format"] == "webp" and spec["image_codec"]["quality"] == 30
        assert spec["image_encoder"]["name"] == "webp_sw_m7" and spec["image_codec"]["libraries"]["libwebp"]
        readme = (folder / "README.md").read_text()
        assert "as a WEBP file" in readme and "| kind | u8 | 3 (0 = feature map" in readme and "quality 30" in readme
    if which == "entropy":  # the fitted model travels in interface.json, and the README specifies the stream
        assert spec["codec"]["algorithm"] == "ans_ctx" and spec["entropy_model"]["kind"] == "ans_ctx"
        assert spec["entropy_model"]["channels"] == spec["cut_shape"][0]
        assert "state = ((state // f) << 24) | (start + state % f)" in (folder / "README.md").read_text()
    elif which in ("image", "detections"):  # an entropy codec (the anchors') codes nothing here: sent as none
        assert spec["entropy_model"] is None
    for f in spec["files"].values():
        onnx.checker.check_model(onnx.load(str(folder / f)), full_check=True)
    assert all(v <= 1e-4 for v in spec["onnx_vs_torch_max_relative_error"].values())
    assert ("node" in spec["files"]) == (spec["kind"] != "image")
    assert ("edge" in spec["files"]) == (spec["kind"] != "detections")
    bundle = Bundle(folder)
    server = Server(bundle)
    data, labels = load_images(bundle, None, str(studies))
    r = run(bundle, "127.0.0.1", server.port, data, labels)
    assert r["errors"] == 0 and r["images"] == len(data.images)
    assert abs(r["mAP50"] - rec.mAP50) <= 0.005, (r["mAP50"], rec.mAP50)
    first = run(bundle, "127.0.0.1", server.port, data, labels, limit=spec["payload_images"])
    assert math.ceil(np.mean(first["sizes"])) == rec.payload_bytes  # the bytes the search priced


def readme_payload(image_codes: np.ndarray, spec: dict) -> bytes:
    """The payload built from the bundle README's words alone (not models.codec)."""
    c, h, w = image_codes.shape
    bits = spec["bits"]
    stream = "".join(format(int(v), "08b")[8 - bits:] for v in image_codes.reshape(-1))  # C,H,W order, MSB first
    stream += "0" * (-len(stream) % 8)
    body = bytes(int(stream[i:i + 8], 2) for i in range(0, len(stream), 8))
    if spec["codec"]["algorithm"] == "zlib":
        z = zlib.compress(body, 6)
        codec, body = (1, z) if len(z) < len(body) else (0, body)
    elif spec["codec"]["algorithm"] in ("ans", "ans_ctx"):
        coded = readme_entropy_body(image_codes, spec["entropy_model"])
        codec, body = ({"ans": 4, "ans_ctx": 5}[spec["codec"]["algorithm"]], coded) if len(coded) < len(body) \
            else (0, body)
    else:
        codec = 0
    head = struct.pack("<2sBBBBHHHff", b"SP", spec["payload_format_version"], 0, codec, bits, c, h, w,
                       spec["mu"], spec["max"])
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


@pytest.mark.parametrize("which", ["best", "entropy"])
def test_node_payload_is_what_the_readme_says(study, which):
    """An implementation from the README (header fields, bit order, channel order, codec; the entropy coder) gives
    the node's bytes."""
    studies, _, trials = study
    bundle = Bundle(bundle_dir(studies, trials[which]))
    assert which != "entropy" or bundle.algorithm == "ans_ctx"
    assert bundle.kind == "features" and "most significant first" in (bundle.folder / "README.md").read_text()
    data, _ = load_images(bundle, None, str(studies))
    sess = bundle.sessions["node"]
    for k in range(4):
        img = data.images[k].transpose(2, 0, 1).astype(np.float32) / 255
        f = sess.run(None, {"image": img[None]})[0][0]
        half = 2 ** (bundle.bits - 1)
        step = np.float32(np.float32(bundle.spec["max"]) / np.float32(half))
        codes = np.clip(np.floor((f - np.float32(bundle.spec["mu"])) / step), -half, half - 1) + half
        assert readme_payload(codes.astype(np.uint8), bundle.spec) == bundle.node_payload(img)
        # and the edge reads them back to the same detections whichever side encoded
        assert np.array_equal(bundle.edge_detections(readme_payload(codes.astype(np.uint8), bundle.spec)),
                              bundle.edge_detections(bundle.node_payload(img)))


@pytest.fixture(scope="module")
def served(study):
    studies, _, trials = study
    bundle = Bundle(bundle_dir(studies, trials["best"]))
    data, _ = load_images(bundle, None, str(studies))
    good = bundle.node_payload(data.images[0].transpose(2, 0, 1).astype(np.float32) / 255)
    return bundle, Server(bundle, max_frame=4096), good, data


def test_bad_frames_get_an_error_reply_and_the_server_goes_on(served, caplog):
    caplog.set_level("WARNING", logger="search.deploy.edge")
    bundle, server, good, _ = served
    ref = bundle.edge_detections(good)
    flipped = bytearray(good)
    flipped[-1] ^= 0x10
    version = bytearray(good)
    version[2] = 9
    cases = {"truncated": good[:-3], "bit-flipped": bytes(flipped), "wrong version": bytes(version),
             "garbage": bytes(range(200)), "empty": b""}
    with Client("127.0.0.1", server.port) as c:
        for name, payload in cases.items():
            caplog.clear()
            status, body = c.ask(payload)
            assert status == ERROR and body and b"\n" not in body, name
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "\n" not in lines[0] and body.decode() in lines[0], (name, lines)
            status, body = c.ask(good)  # the same connection goes on
            assert status == OK and np.array_equal(parse_detections(body), ref)
    assert b"CRC-32" in Client("127.0.0.1", server.port).ask(bytes(flipped))[1]
    # oversized: refused from the header alone (the body is never sent) and that connection is closed
    with Client("127.0.0.1", server.port) as c:
        c.send_raw(REQUEST.pack(REQUEST_MAGIC, 7, 1 << 30))
        rid, status, body = c.read_reply()
        assert (rid, status) == (7, ERROR) and b"exceeds the limit 4096" in body
        assert c.sock.recv(1) == b""
    # bad magic: refused and closed
    with Client("127.0.0.1", server.port) as c:
        c.send_raw(b"HTTP" + bytes(8))
        assert c.read_reply()[1] == ERROR and c.sock.recv(1) == b""
    # a client that disconnects mid-frame frees its task; others are served
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(request(1, good)[:-5])
    s.close()
    with Client("127.0.0.1", server.port) as c:
        assert c.ask(good)[0] == OK
    for _ in range(100):
        if server.edge.clients == 0:
            break
        threading.Event().wait(0.05)
    assert server.edge.clients == 0


def test_idle_connections_are_closed_and_clients_beyond_the_cap_refused(served):
    bundle, _, good, _ = served
    assert bundle.spec["idle_timeout_s"] == 60 and bundle.spec["max_clients"] == 64  # conf/config.yaml's deploy.*
    server = Server(bundle, idle_timeout_s=0.5, max_clients=2)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]  # two idle sockets: the cap
    for _ in range(100):
        if server.edge.clients == 2:
            break
        threading.Event().wait(0.02)
    with Client("127.0.0.1", server.port) as c:  # a third is refused with a reply, not left hanging
        rid, status, body = c.read_reply()
        assert status == ERROR and b"2 clients are connected (the limit)" in body and c.sock.recv(1) == b""
    assert server.edge.refused == 1
    # the idle ones are closed after the timeout (mid-frame too), so new clients get in
    idle[1].sendall(request(1, good)[:10])
    for s in idle:
        s.settimeout(5)
        assert s.recv(1) == b""  # closed by the server
        s.close()
    assert server.edge.timed_out == 2
    with Client("127.0.0.1", server.port) as c:
        assert c.ask(good)[0] == OK


def test_load_four_clients_200_images_each(served):
    bundle, server, _, data = served
    n = min(len(data.images), 32)
    payloads = [bundle.node_payload(data.images[k].transpose(2, 0, 1).astype(np.float32) / 255) for k in range(n)]
    refs = [bundle.edge_detections(p) for p in payloads]
    bad = []

    def client(seed):
        rng = np.random.default_rng(seed)
        with Client("127.0.0.1", server.port, timeout=60) as c:
            for _ in range(200):
                k = int(rng.integers(n))
                status, body = c.ask(payloads[k])  # ask() checks the reply id
                if status != OK or not np.array_equal(parse_detections(body), refs[k]):
                    bad.append((seed, k))

    before = server.edge.served
    threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and bad == []
    assert server.edge.served - before == 800


def test_deploy_errors_are_one_line(study, tmp_path):
    studies, _, _ = study
    r = subprocess.run([sys.executable, "-m", "search", *QUICK, f"studies_dir={studies}", "mode=deploy",
                        "deploy.trial=9999"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: deploy.trial=9999: not a complete trial of study quick"], r.stderr
    r = subprocess.run([sys.executable, "-m", "search.deploy.edge", "--bundle", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "interface.json: not a deploy bundle" in r.stderr


def test_codecs_in_the_readme_table_are_the_codec_ids():
    assert {name: c.ident for name, c in CODECS.items()} == {"none": 0, "zlib": 1, "zstd": 2, "lzma": 3,
                                                                "ans": 4, "ans_ctx": 5}


def test_the_command_line_edge_and_node_on_a_folder_of_images(study, tmp_path):
    """``python -m search.deploy.edge`` and ``python -m search.deploy.node --images DIR``: a YOLO folder of the
    validation images gives the same one-line result as the bundle's own data."""
    studies, _, trials = study
    folder = bundle_dir(studies, trials["best"])
    bundle = Bundle(folder)
    data, _ = load_images(bundle, None, str(studies))
    write_yolo(data, tmp_path / "images", tmp_path / "labels")
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    edge = subprocess.Popen([sys.executable, "-m", "search.deploy.edge", "--bundle", str(folder), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert edge.stdout.readline().strip() == f"listening on {port}"
        lines = []
        for extra in (["--studies-dir", str(studies)], ["--images", str(tmp_path / "images")]):
            r = subprocess.run([sys.executable, "-m", "search.deploy.node", "--bundle", str(folder), "--connect",
                                f"127.0.0.1:{port}", *extra], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            lines.append(r.stdout.strip().splitlines()[-1])
        fields = [dict(kv.split("=") for kv in line.split()) for line in lines]
        assert fields[0]["mAP50"] == fields[1]["mAP50"] and fields[0]["bytes_per_image"] == fields[1]["bytes_per_image"]
        assert fields[0]["images"] == str(len(data.images)) and set(fields[0]) == {
            "mAP50", "bytes_per_image", "p50_ms", "p99_ms", "images"}
        r = subprocess.run([sys.executable, "-m", "search.deploy.node", "--bundle", str(folder), "--connect",
                            "127.0.0.1:1", "--studies-dir", str(studies)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--connect 127.0.0.1:1" in r.stderr
    finally:
        edge.terminate()
        edge.wait(10)


@pytest.mark.parametrize("cfg,j,keep", [("yolov3-tiny", 6, {4: 0.25}), ("yolov4-tiny", 4, {7: 0.5}),
                                        ("yolov4-tiny", 3, {2: 0.25})])
def test_kept_channel_indices_name_the_unpruned_channels_the_node_sends(cfg, j, keep):
    """interface.json's kept_channels: the pruned node's channel k is the unpruned node's channel kept[k]
    (yolov4-tiny j=4 cuts route 8 = concat(conv 2, conv 7): conv 7's channels sit after conv 2's 64)."""
    from models import DetectorConfig, prune, split
    from models.darknet import Darknet
    from search.deploy.bundle import cut_channel_indices

    torch.manual_seed(0)
    model = Darknet(DetectorConfig(cfg, 1, 64, width=0.5)).eval()
    full = split(model, j, interface=False)
    sm = split(model, j, interface=False)
    kept: dict[int, list[int]] = {}
    prune(sm, keep, kept=kept)
    idx = cut_channel_indices(sm, {str(c): v for c, v in kept.items()})
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = sm.node(x), full.node(x)
    assert a.shape[1] == len(idx) < b.shape[1] and idx == sorted(idx)
    assert torch.allclose(a, b[:, idx], atol=1e-5)
    if cfg == "yolov4-tiny" and j == 4:
        assert idx[:32] == list(range(32)) and min(idx[32:]) >= 32  # conv 2 whole (32 at width 0.5), conv 7 after
