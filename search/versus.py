"""Is splitting worth it? The best split against the best coded image (JPEG / WebP at j = 0), from trial rows.

Split computing is judged against sending the coded image, not raw pixels (sc2bench, CompressAI-Vision). These
pure functions of ``trials.csv``-style rows (complete trials; the ``image_codec`` column says which j = 0 rows are
coded images) give the report and the summary their comparison:

- :func:`versus_coded`: per radio, the lowest-energy feasible split against the lowest-energy feasible coded image
  and the raw image on the same radio: bytes, mAP@0.5, node energy and latency, and who wins.
- :func:`equal_map`: the feasible split that sends the fewest bytes against the smallest coded image of at least
  its mAP@0.5: the split's saving in bytes and, per radio, in node energy - negative where the coded image wins.
- :func:`rate_accuracy`: one point per model (payload bytes with its best codec, bits per input pixel, mAP@0.5)
  for the rate-accuracy figure.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from objectives.design import bottleneck_of

RAW, SPLIT, NODE = "raw image", "split", "all in node"
BOTTLENECK = "split, learned bottleneck"  # the rate-accuracy figure's own curve (a split everywhere else)


def option(rows: pd.DataFrame, node_j: int) -> pd.Series:
    """What the node sends, per row: ``raw image``, the image codec's name (``jpeg``, ``webp``), ``split`` or
    ``all in node``."""
    codec = rows["image_codec"].fillna("").astype(str) if "image_codec" in rows else pd.Series("", rows.index)

    def one(j: int, c: str) -> str:
        if j == 0:
            return c or RAW
        return NODE if j == node_j else SPLIT

    return pd.Series([one(int(j), c) for j, c in zip(rows["j"], codec, strict=True)], index=rows.index)


def input_pixels(rows: pd.DataFrame) -> float:
    """H x W of the input image, from a j = 0 row's ``cut_shape`` (3xHxW); NaN where the study has none."""
    shapes = rows.loc[rows["j"] == 0, "cut_shape"].dropna() if "cut_shape" in rows else []
    for s in shapes:
        _, h, w = (int(v) for v in str(s).split("x"))
        return float(h * w)
    return math.nan


def _coded(df: pd.DataFrame, node_j: int) -> pd.DataFrame:
    return df[~option(df, node_j).isin([RAW, SPLIT, NODE])] if len(df) else df


def _of(df: pd.DataFrame, node_j: int, what: str) -> pd.DataFrame:
    return df[option(df, node_j) == what] if len(df) else df


def _point(r: pd.Series | None, prefix: str) -> dict[str, Any]:
    if r is None:
        return {f"{prefix} point": "none feasible", f"{prefix} B": math.nan, f"{prefix} mAP50": math.nan,
                f"{prefix} mJ": math.nan, f"{prefix} ms": math.nan}
    return {f"{prefix} point": describe(r), f"{prefix} B": float(r["payload_bytes"]), f"{prefix} mAP50": r["mAP50"],
            f"{prefix} mJ": r["node_energy_mJ"], f"{prefix} ms": r["latency_ms"]}


def describe(r: pd.Series) -> str:
    """A short name of a row's design: 'jpeg q50', 'raw image/zlib', 'j=2, 1 bit, cut 12.5 %/none'."""
    c = r.get("image_codec")
    if int(r["j"]) == 0:
        return f"{c} q{int(r['image_quality'])}" if isinstance(c, str) and c else f"raw image/{r['codec']}"
    bits = "" if pd.isna(r.get("bits")) else f", {int(r['bits'])} bit"
    keep = "" if pd.isna(r.get("keep_cut")) else f", cut {100 * float(r['keep_cut']):.3g} %"
    return f"j={int(r['j'])}{bits}{keep}/{r['codec']}"


def _lowest(df: pd.DataFrame, col: str) -> pd.Series | None:
    return None if df.empty else df.sort_values([col, "trial"]).iloc[0]


def versus_coded(done: pd.DataFrame, feasible: pd.Series, node_j: int) -> pd.DataFrame:
    """Per radio: the lowest-energy feasible split, coded image and raw image, and the split's energy saving,
    speed-up (lowest-latency points) and payload ratio against the coded image (> 1: the split is better)."""
    rows = []
    feas = done[feasible]
    for radio in sorted(done["radio"].dropna().unique()):
        f = feas[feas["radio"] == radio]
        split, coded, raw = _of(f, node_j, SPLIT), _coded(f, node_j), _of(f, node_j, RAW)
        s, c = _lowest(split, "node_energy_mJ"), _lowest(coded, "node_energy_mJ")
        row: dict[str, Any] = {"radio": radio, **_point(s, "split"), **_point(c, "coded image"),
                               **_point(_lowest(raw, "node_energy_mJ"), "raw image")}
        sf, cf = _lowest(split, "latency_ms"), _lowest(coded, "latency_ms")
        row["energy_saving_vs_coded"] = c["node_energy_mJ"] / s["node_energy_mJ"] if s is not None and c is not None \
            else math.nan
        row["speedup_vs_coded"] = cf["latency_ms"] / sf["latency_ms"] if sf is not None and cf is not None else math.nan
        row["payload_ratio_vs_coded"] = c["payload_bytes"] / s["payload_bytes"] if s is not None and c is not None \
            else math.nan
        row["verdict"] = verdict(row["energy_saving_vs_coded"], s is not None, c is not None)
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(saving: float, has_split: bool, has_coded: bool) -> str:
    if not has_split:
        return "coded image (no split is feasible)" if has_coded else "neither is feasible"
    if not has_coded:
        return "split (no coded image is feasible)"
    return "split wins on energy" if saving > 1 else "coded image wins on energy"


def equal_map(done: pd.DataFrame, feasible: pd.Series, node_j: int) -> dict[str, Any] | None:
    """The feasible split with the fewest payload bytes against the smallest coded image (any codec, quality and
    radio-independent bytes) whose mAP@0.5 is at least the split's: byte saving ``1 - split/coded`` and, per radio,
    node-energy saving ``1 - split/coded`` (each with its lowest-energy codec on that radio); negative where the
    coded image is cheaper. None where the study has no feasible split or no coded image at that mAP."""
    feas = done[feasible]
    split = _of(feas, node_j, SPLIT)
    if split.empty:
        return None
    s = split.sort_values(["payload_bytes", "node_energy_mJ", "trial"]).iloc[0]
    coded = _coded(done, node_j)
    coded = coded[coded["mAP50"] >= s["mAP50"]]
    if coded.empty:
        return {"split": describe(s), "split_mAP50": s["mAP50"], "split_B": float(s["payload_bytes"]),
                "coded": None, "per_radio": pd.DataFrame()}
    c = coded.sort_values(["payload_bytes", "node_energy_mJ", "trial"]).iloc[0]
    per = []
    for radio in sorted(done["radio"].dropna().unique()):
        se = done[(done["accuracy_key"] == s["accuracy_key"]) & (done["radio"] == radio)]["node_energy_mJ"].min()
        ce = done[(done["accuracy_key"] == c["accuracy_key"]) & (done["radio"] == radio)]["node_energy_mJ"].min()
        per.append({"radio": radio, "split mJ": se, "coded image mJ": ce, "energy saving": 1 - se / ce})
    return {"split": describe(s), "split_mAP50": s["mAP50"], "split_B": float(s["payload_bytes"]),
            "coded": describe(c), "coded_mAP50": c["mAP50"], "coded_B": float(c["payload_bytes"]),
            "byte_saving": 1 - float(s["payload_bytes"]) / float(c["payload_bytes"]), "per_radio": pd.DataFrame(per)}


def rate_accuracy(done: pd.DataFrame, node_j: int) -> pd.DataFrame:
    """One point per model (its smallest payload over the codecs): option (a learned bottleneck as
    :data:`BOTTLENECK`), payload bytes, bits per input pixel, mAP@0.5, accuracy key."""
    if done.empty:
        return pd.DataFrame(columns=["option", "payload_bytes", "bits_per_pixel", "mAP50", "accuracy_key"])
    px = input_pixels(done)
    d = done.assign(option=option(done, node_j))
    d = d[d["option"] != NODE]
    per = d.sort_values(["payload_bytes", "trial"]).drop_duplicates("accuracy_key")
    out = per[["option", "payload_bytes", "mAP50", "accuracy_key"]].copy()
    learned = out["accuracy_key"].map(lambda k: bottleneck_of(str(k)) is not None)
    out.loc[learned, "option"] = BOTTLENECK  # a split too, drawn as a curve of its own
    out.insert(2, "bits_per_pixel", 8 * out["payload_bytes"] / px)
    return out.sort_values(["option", "payload_bytes"]).reset_index(drop=True)


def summary(done: pd.DataFrame, feasible: pd.Series, node_j: int) -> list[str]:
    """Lines for the terminal summary: per radio who wins, and the equal-mAP saving."""
    if done.empty or not _coded(done, node_j).shape[0]:
        return []
    lines = ["split vs coded image (lowest-energy feasible point of each on the same radio):"]
    for _, r in versus_coded(done, feasible, node_j).iterrows():
        lines.append(f"  {r['radio']:>7}: split {r['split point']} {r['split B']:.0f} B {r['split mJ']:.3f} mJ | "
                     f"coded {r['coded image point']} {r['coded image B']:.0f} B {r['coded image mJ']:.3f} mJ -> "
                     f"{r['verdict']}")
    eq = equal_map(done, feasible, node_j)
    if eq and eq["coded"]:
        lines.append(f"  at equal mAP@0.5: split {eq['split']} ({eq['split_B']:.0f} B, {eq['split_mAP50']:.3f}) vs "
                     f"{eq['coded']} ({eq['coded_B']:.0f} B, {eq['coded_mAP50']:.3f}): the split saves "
                     f"{100 * eq['byte_saving']:+.0f} % of the bytes"
                     + ("" if eq["byte_saving"] >= 0 else " (negative: the coded image is smaller)"))
    return lines
