"""``python -m search.deploy.node --bundle DIR --connect HOST:PORT [--images DIR] [--limit N]``: the reference node.

Runs ``node.onnx`` on the validation images of the bundle's data (generated or read as the search did; ``--images``
takes a folder of images instead, with YOLO labels beside them in ``../labels`` when there are any), quantizes,
packs and compresses exactly as the search measured, sends each payload to the edge server and collects the
detections it answers. It ends with one line::

    mAP50=0.9012 bytes_per_image=12824.0 p50_ms=3.10 p99_ms=4.82 images=400

(mAP@0.5 of the answered detections, ``nan`` without labels; the mean payload size; the per-image round trip:
node inference, encoding, transfer, edge inference and reply.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from search.deploy.protocol import OK, Client, ProtocolError, parse_detections
from search.deploy.runtime import Bundle, BundleError


def load_images(bundle: Bundle, images: str | None, studies_dir: str):
    """(images (N, S, S, 3) uint8, labels or None, class names)."""
    from objectives.data.real import DataError, load_yolo

    size, names = bundle.spec["input_size"], bundle.spec["class_names"]
    if images:
        with tempfile.TemporaryDirectory() as tmp:
            y = Path(tmp) / "data.yaml"
            y.write_text(f"path: {Path(images).resolve()}\ntrain: .\nval: .\nnames: {list(names)}\n")
            try:
                ds, _ = load_yolo(y, "val", size)
            except DataError as e:
                raise BundleError(f"--images {images}: {e}") from None
        has_labels = (Path(images).resolve().parent / "labels").is_dir()
        return ds, has_labels
    from search.config import DataConfig
    from search.data import load_data

    _, val, _ = load_data(DataConfig(**bundle.spec["data"]), Path(studies_dir) / "cache")
    return val, True


def run(bundle: Bundle, host: str, port: int, data, has_labels: bool, limit: int | None = None) -> dict:
    from objectives.accuracy import ground_truth
    from objectives.metrics import average_precision

    n = len(data.images) if limit is None else min(limit, len(data.images))
    dets, sizes, times, errors = [], [], [], 0
    with Client(host, port) as client:
        for k in range(n):
            img = data.images[k].transpose(2, 0, 1).astype(np.float32) / 255
            t0 = time.perf_counter()
            payload = bundle.node_payload(img)
            status, body = client.ask(payload)
            times.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(payload))
            if status != OK:
                errors += 1
                print(f"image {k}: edge error: {body.decode(errors='replace')}", file=sys.stderr)
                dets.append(np.zeros((0, 6), np.float32))
            else:
                dets.append(parse_detections(body))
    m = float("nan")
    if has_labels:
        m = average_precision(dets, ground_truth(data.subset(0, n), bundle.spec["input_size"]),
                              len(bundle.spec["class_names"])).map50
    return {"mAP50": m, "bytes_per_image": float(np.mean(sizes)), "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "images": n, "errors": errors, "detections": dets,
            "sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m search.deploy.node", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--connect", default="127.0.0.1:5555", help="HOST:PORT of the edge server")
    ap.add_argument("--images", default=None, help="a folder of images (default: the bundle's validation set)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--studies-dir", default="studies", help="where the data cache is (studies/cache)")
    args = ap.parse_args(argv)
    from search.extras import missing

    if missing("deploy"):
        print(f"error: the reference runtime needs the 'deploy' extra ({', '.join(missing('deploy'))} not "
              f"installed): pip install -e '.[deploy]'", file=sys.stderr)
        return 2
    host, _, port = args.connect.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --connect {args.connect!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    try:
        bundle = Bundle(args.bundle, threads=1)
        data, labels = load_images(bundle, args.images, args.studies_dir)
        r = run(bundle, host, int(port), data, labels, args.limit)
    except (BundleError, ProtocolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --connect {args.connect}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"mAP50={r['mAP50']:.4f} bytes_per_image={r['bytes_per_image']:.1f} p50_ms={r['p50_ms']:.2f} "
          f"p99_ms={r['p99_ms']:.2f} images={r['images']}", flush=True)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
