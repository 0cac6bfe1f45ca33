"""Benchmark (a first look for issue #25): a learned bottleneck at the cut of the default baseline, trained by
reconstruction of the cut feature + lambda x rate with the node and the edge frozen, no fine-tuning.

    python benchmarks/bench_bottleneck.py [--partitions 4 5] [--latent 8 16 32] [--lam 0.02 0.1] [--steps 1500]
        [--out docs/results/bottleneck.csv] [hydra overrides]

For each cut j, latent width k and lambda: the node's features of the training images are computed once; a
``models.bottleneck.Bottleneck`` (3x3 encoder C -> k, integers in [-15, 15] with a factorized prior, 3x3 decoder
k -> C) is trained with Adam on MSE(decoded, feature) / var(feature) + lambda x bits per cut position; then the
split with the bottleneck in place is scored on the validation set (mAP@0.5, the edge unchanged) and its payload
is the real coder's: the prior's ``ans`` tables over the rounded latent, framed (24-byte header), mean over
``eval.payload_images`` validation images. Each point is priced with the search's own cost model
(``search.objective.score``, codec profile ``ans``: the node runs the node layers and the encoder, codes k*H*W
values; the edge the decoder and the edge layers) on every radio of ``--radios``. The coded image to beat is in
docs/results/coded_image.md (priced by the same model there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from results import default_out, write
from torch import nn

from models import split
from models.bottleneck import Bottleneck
from models.codec import encode_features
from objectives.accuracy import evaluate_map
from objectives.objective import AccuracyResult
from search.config import compose
from search.objective import score
from search.workbench import Workbench, measuring


class WithBottleneck(nn.Module):
    """node -> bottleneck (rounded, eval) -> edge: returns the raw heads like the unsplit model."""

    def __init__(self, sm, b: Bottleneck) -> None:
        super().__init__()
        self.sm, self.b = sm, b

    def forward(self, x):
        y, _ = self.b(self.sm.node(x))
        return self.sm.edge(y)


def features(sm, images: np.ndarray, chunk: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([sm.node(torch.from_numpy(images[i:i + chunk]).permute(0, 3, 1, 2).float() / 255)
                          for i in range(0, len(images), chunk)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", nargs="*", type=int, default=[4, 5])
    ap.add_argument("--latent", nargs="*", type=int, default=[8, 16, 32])
    ap.add_argument("--lam", nargs="*", type=float, default=[0.02, 0.1])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--radius", type=int, default=15)
    ap.add_argument("--radios", nargs="*", default=["ble4", "ble5", "lte_c4", "wifi", "lte_m1", "nbiot", "lora"])
    ap.add_argument("--out", type=Path, default=default_out(__file__))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    rc = compose(["progress=false", *args.overrides])
    wb = Workbench(rc)
    base, train, val = wb.baseline.model, wb.train, wb.val
    head, size = base.cfg.head(), base.cfg.input_size
    ref = evaluate_map(base, val, head, size, rc.eval.conf_threshold, rc.eval.nms_iou)
    print(f"{wb.model_name}: baseline mAP@0.5 {ref.map50:.4f}", flush=True)
    _, pricing = measuring(rc, ref.map50, rc.train, radios=set(args.radios), codecs={"ans"})
    rows = []
    for j in args.partitions:
        sm = split(base, j, interface=False).eval()
        f_train, f_val = features(sm, train.images), features(sm, val.images[:rc.eval.payload_images])
        var = float(f_train.var())
        c, h, w = f_train.shape[1:]
        for k in args.latent:
            for lam in args.lam:
                torch.manual_seed(0)
                b = Bottleneck(c, k, args.radius, kernel=3)
                with torch.no_grad():  # start the latent at a few levels per unit of the feature
                    b.encoder.weight.mul_(4 / max(var, 1e-6) ** 0.5)
                opt = torch.optim.Adam(b.parameters(), lr=1e-3)
                t0 = time.time()
                b.train()
                for _ in range(args.steps):
                    x = f_train[torch.randint(0, len(f_train), (32,))]
                    y, rate = b(x)
                    loss = ((y - x) ** 2).mean() / var + lam * rate / (32 * h * w)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                seconds = time.time() - t0
                b.eval()
                model = b.prior.entropy_model()
                with torch.no_grad():
                    codes = b.codes(f_val)
                    est = float(b.prior.rate_bits(b.latent(f_val))) / len(f_val) / 8
                sizes = [len(encode_features(q, model.bits, 0.0, 0.0, "ans", model=model)) for q in codes]
                r = evaluate_map(WithBottleneck(sm, b).eval(), val, head, size, rc.eval.conf_threshold,
                                 rc.eval.nms_iou)
                row = {"j": j, "channels": c, "latent": k, "lambda": lam, "steps": args.steps, "train_s": seconds,
                       "mAP50": r.map50, "baseline_mAP50": ref.map50, "payload_B": float(np.mean(sizes)),
                       "rate_estimate_B": est, "bits_per_position": 8 * (float(np.mean(sizes)) - 24) / (h * w),
                       "node_extra_MMAC": c * k * 9 * h * w / 1e6}
                macs = sm.macs()
                enc, dec = (sum(p.numel() for p in m.parameters()) * h * w for m in (b.encoder, b.decoder))
                acc = AccuracyResult(
                    key=f"j={j};bottleneck={k};lambda={lam}", j=j, map50=r.map50, map50_95=r.map50_95,
                    map50_before_finetune=float("nan"), node_macs=macs.node + enc, edge_macs=macs.edge + dec,
                    node_macs_per_layer={}, cut_shape=[k, h, w], feature_values=k * h * w,
                    raw_bytes=-(-k * h * w * model.bits // 8), payload_mean_bytes={"ans": float(np.mean(sizes))},
                    payload_max_bytes={"ans": max(sizes)}, entropy_bytes=0.0, best_codec="ans",
                    weight_count=sum(p.numel() for p in sm.node.parameters()) + sum(p.numel() for p in
                                                                                   b.encoder.parameters()),
                    peak_activation_values=sm.node_peak_activation(torch.zeros(1, 3, size, size)),
                    entropy_table_bytes={"ans": model.table_bytes})
                for radio in args.radios:
                    sc = score(acc, radio, "ans", pricing)
                    row[f"{radio}_mJ"] = sc.cost.node_energy_mj if sc.cost.feasible else float("nan")
                rows.append(row)
                print(f"j={j} k={k} lambda={lam}: mAP@0.5 {r.map50:.4f}, {row['payload_B']:.0f} B "
                      f"(estimate {est + 24:.0f} B), trained {seconds:.0f} s", flush=True)
    print(write(rows, args.out, "A learned bottleneck at the cut, first look (node and edge frozen, no fine-tuning)",
                f"{wb.model_name}, baseline mAP@0.5 {ref.map50:.4f}"))


if __name__ == "__main__":
    main()
