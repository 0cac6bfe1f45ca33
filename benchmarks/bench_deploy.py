"""Deploy runtime figures: the reference node against the edge server (one client, the whole validation set), then
a load of N clients x M requests on loopback: throughput and per-request p50/p99.

    python benchmarks/bench_deploy.py                       # quick study -> its best point, deployed
    python benchmarks/bench_deploy.py --bundle studies/energy_latency/deploy/123 --studies-dir studies
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from results import default_out, write  # noqa: E402 - benchmarks/results.py (this folder)

from search.deploy.node import load_images, run  # noqa: E402
from search.deploy.protocol import OK, Client  # noqa: E402
from search.deploy.runtime import Bundle  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--studies-dir", default=None)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    studies = args.studies_dir or str(Path(tmp) / "studies")
    bundle_dir = args.bundle
    if bundle_dir is None:
        for extra in ([], ["mode=deploy"]):
            out = subprocess.run([sys.executable, "-m", "search", "study=quick", "progress=false",
                                  f"studies_dir={studies}", *extra], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout
        bundle_dir = out.split("-> ")[-1].strip().rstrip("/")
    bundle = Bundle(bundle_dir, threads=1)
    spec = json.loads((Path(bundle_dir) / "interface.json").read_text())
    port = free_port()
    edge = subprocess.Popen([sys.executable, "-m", "search.deploy.edge", "--bundle", bundle_dir, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        edge.stdout.readline()  # "listening on ..."
        data, labels = load_images(bundle, None, studies)
        r = run(bundle, "127.0.0.1", port, data, labels)
        print(f"bundle {bundle_dir}: trial {spec['trial']} {spec['key']} ({spec['kind']}, {spec['codec']['name']})")
        print(f"node, one client, every validation image: mAP50={r['mAP50']:.4f} (search {spec['mAP50']:.4f}) "
              f"bytes_per_image={r['bytes_per_image']:.1f} (search {spec['payload_bytes']} over the first "
              f"{spec['payload_images']}) p50_ms={r['p50_ms']:.2f} p99_ms={r['p99_ms']:.2f} images={r['images']}")
        n = len(data.images)
        payloads = [bundle.node_payload(data.images[k].transpose(2, 0, 1).astype(np.float32) / 255)
                    for k in range(n)]
        lat: list[float] = []
        errors = []

        def client(seed: int) -> None:
            with Client("127.0.0.1", port, timeout=120) as c:
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    status, _ = c.ask(payloads[(seed * 7919 + i) % n])
                    lat.append((time.perf_counter() - t0) * 1000)
                    if status != OK:
                        errors.append(i)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        total = args.clients * args.requests
        print(f"edge under load: {args.clients} clients x {args.requests} requests = {total} in {wall:.2f} s: "
              f"{total / wall:.0f} requests/s, per request p50 {np.percentile(lat, 50):.2f} ms, "
              f"p99 {np.percentile(lat, 99):.2f} ms, errors {len(errors)}")
        write([{"bundle_trial": spec["trial"], "key": spec["key"], "kind": spec["kind"], "codec": spec["codec"]["name"],
                "mAP50": r["mAP50"], "mAP50_search": spec["mAP50"], "bytes_per_image": r["bytes_per_image"],
                "bytes_search": spec["payload_bytes"], "one_client_p50_ms": r["p50_ms"],
                "one_client_p99_ms": r["p99_ms"], "clients": args.clients, "requests_each": args.requests,
                "requests_per_s": total / wall, "load_p50_ms": float(np.percentile(lat, 50)),
                "load_p99_ms": float(np.percentile(lat, 99)), "errors": len(errors)}], args.out,
              "The reference node and edge of a deploy bundle", "one client over every validation image, then load")
    finally:
        edge.terminate()
        edge.wait(10)


if __name__ == "__main__":
    main()
