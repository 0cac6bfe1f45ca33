"""`python -m search.radio_table`: every radio profile x a few payload sizes (time, energy, energy/byte)."""

from __future__ import annotations

import argparse

from objectives.costs import transfer_cost
from search.profiles import available, load_profile

SIZES = (100, 1_000, 5_000, 10_000, 86_528)


def table(sizes: tuple[int, ...] = SIZES) -> list[dict[str, object]]:
    rows = []
    for name in available("radio"):
        radio = load_profile("radio", name)
        for n in sizes:
            c = transfer_cost(n, radio)
            rows.append({"radio": name, "bytes": n, "frames": c.frames, "latency_ms": c.latency_ms,
                         "energy_mj": c.energy_mj, "uj_per_byte": c.energy_mj * 1e3 / n,
                         "feasible": c.feasible, "reason": c.reason})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m search.radio_table", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="payload sizes in bytes")
    args = ap.parse_args(argv)
    print(f"{'radio':8s} {'bytes':>7s} {'frames':>6s} {'time ms':>12s} {'energy mJ':>11s} {'uJ/B':>8s}  note")
    for r in table(tuple(args.sizes)):
        note = "" if r["feasible"] else "INFEASIBLE: " + str(r["reason"]).split(": ", 1)[-1]
        print(f"{r['radio']:8s} {r['bytes']:7d} {r['frames']:6d} {r['latency_ms']:12.2f} {r['energy_mj']:11.3f} "
              f"{r['uj_per_byte']:8.3f}  {note}")
    print("Transfer only: setup and tail are excluded unless a profile sets count_setup/count_tail.")


if __name__ == "__main__":
    main()
