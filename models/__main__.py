"""`python -m models`: a seconds-long demonstration of the split/quantize/encode pipeline.

For every partition point j it splits a Tiny-YOLOv3, quantizes the cut to b bits, encodes the payload with
every codec and prints the shapes, bytes and MACs. The weights are untrained (no data is trained here), so
the compressed sizes only show the pipeline working; the trained numbers come from `python -m search`.
"""

from __future__ import annotations

import argparse

import torch

from models import CODECS, PARTITIONS, TinyYOLOv3, TinyYOLOv3Config, calibrate, encode_detections, split
from models.codec import encode_features, packed_nbytes
from models.yolo import decode, postprocess


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416, help="input size, a multiple of 32")
    ap.add_argument("--bits", type=int, default=1, help="interface bits b (1..8)")
    ap.add_argument("--classes", type=int, default=1)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = TinyYOLOv3Config(num_classes=args.classes, input_size=args.size)
    model = TinyYOLOv3(cfg).eval()
    x = torch.rand(1, 3, args.size, args.size)
    head = cfg.head()
    codecs = sorted(CODECS)
    print(f"Tiny-YOLOv3 {args.size}px, {args.classes} class(es), b={args.bits}; untrained weights, random image")
    print(f"{'j':>2} {'cut (C,H,W)':>16} {'node MMAC':>10} {'edge MMAC':>10} {'packed B':>9} "
          + " ".join(f"{c + ' B':>8}" for c in codecs))
    with torch.no_grad():
        for j in PARTITIONS:
            sm = split(model, j, bits=args.bits).eval()
            macs = sm.macs()
            if j == 6:
                dets = postprocess(decode(sm(x), head), conf_threshold=0.25)[0]
                sizes = [len(encode_detections(dets, c)) for c in codecs]
                shape, packed = f"{len(dets)} dets", len(dets) * 12
            else:
                f = sm.node(x)
                if j > 0:
                    calibrate(sm.interface, [f])
                q = sm.interface.quantize(f[0])
                bits = 8 if j == 0 else args.bits
                mu, mx = float(sm.interface.mu), float(sm.interface.max)
                sizes = [len(encode_features(q, bits, mu, mx, c)) for c in codecs]
                shape, packed = str(tuple(f.shape[1:])), packed_nbytes(q.numel(), bits)
            print(f"{j:>2} {shape:>16} {macs.node / 1e6:>10.1f} {macs.edge / 1e6:>10.1f} {packed:>9} "
                  + " ".join(f"{s:>8}" for s in sizes))


if __name__ == "__main__":
    main()
