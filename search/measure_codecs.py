"""`python -m search.measure_codecs`: measure the codecs on this machine and write node codec profiles.

The sample is a realistic payload: packed 1-bit codes of a sparse feature map (or a file you give). The
profiles land in ``studies/profiles/codec/<codec>_host.yaml``; copy one into ``conf/codec/`` and name it in
the space to use it (``space.codecs=[zlib_host]``): its ``codec:`` field says which algorithm produces the
payload, its numbers price it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from models.codec import CODECS, pack_codes
from objectives.costs.measure import host_codec_profile, measure_codec
from search.profiles import load_profile


def host_clock_hz() -> float:
    """Nominal clock from /proc/cpuinfo (Linux); 3 GHz when it cannot be read (stated in the output)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":")[1]) * 1e6
    except OSError:
        pass
    return 3.0e9


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m search.measure_codecs", description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=Path, help="file whose bytes are compressed (default: synthetic payload)")
    ap.add_argument("--node-scale", type=float, default=10.0,
                    help="assumed cycles ratio node/host for compression code (default 10, an assumption)")
    ap.add_argument("--out", type=Path, default=Path("studies/profiles/codec"))
    args = ap.parse_args(argv)
    if args.sample:
        sample = args.sample.read_bytes()
    else:
        rng = np.random.default_rng(0)
        sample = pack_codes((rng.random(64 * 26 * 26) < 0.2).astype(np.uint8), 1)
    clock = host_clock_hz()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"host clock {clock / 1e9:.2f} GHz, sample {len(sample)} B, node_scale {args.node_scale} (assumption)")
    for name in sorted(CODECS):  # the byte compressors (the entropy codecs: benchmarks/bench_entropy.py)
        if name == "none" or CODECS[name].entropy:
            continue
        m = measure_codec(name, sample)
        ram = load_profile("codec", name).node_ram_bytes
        p = host_codec_profile(m, clock, args.node_scale, ram)
        path = args.out / f"{name}_host.yaml"
        path.write_text(yaml.safe_dump({
            "name": p.name, "codec": p.codec, "level": p.level, "source": p.source,
            "compress_cycles_per_byte": round(p.compress_cycles_per_byte, 1),
            "node_ram_bytes": p.node_ram_bytes, "decompress_mb_per_s": round(p.decompress_mb_per_s, 1),
        }, sort_keys=False))
        print(f"{name:5s} {m.host_compress_s_per_byte * 1e9:8.1f} ns/B host -> {p.compress_cycles_per_byte:9.0f} "
              f"cycles/B node; ratio {m.compressed_bytes / m.raw_bytes:.3f}; edge {p.decompress_mb_per_s:.0f} MB/s"
              f" -> {path}")
    print(f"to use one: cp {args.out}/zlib_host.yaml conf/codec/ && python -m search 'space.codecs=[zlib_host]'")


if __name__ == "__main__":
    main()
