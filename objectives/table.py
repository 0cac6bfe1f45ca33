"""A tabular benchmark of the design space (in the manner of NAS-Bench-201 / HW-NAS-Bench): the accuracy part of
every point of a grid measured once (``benchmarks/build_table.py``), then answered by lookup, so that a
whole study - and a comparison of samplers over many seeds - runs in seconds through the real search code.

The grid (:func:`grid_points`): every split point j, every bit width, :func:`grid_counts` channel counts at the
cut conv (log-spaced from one channel to all) and, where there are earlier node convs, one step-2 keep ratio
shared by all of them (:data:`GRID_LEVELS`: none, 50 %, 25 %); plus the non-split points (the image, the
detections) and, where the node sends the image, each lossy image codec at :data:`GRID_QUALITIES`. A table row
holds everything the cost models need (the fields of
:class:`objectives.objective.AccuracyResult`).

A looked-up point (:meth:`DesignTable.lookup`) is snapped to the grid: its cut channel count to the nearest grid
count (on a log scale, ties to the larger count), its step-2 ratios to the nearest level. A point the grid cannot
answer - another j, bit width or criterion, step-2 ratios outside the levels' range or not one shared level, a
row the table lacks - raises :class:`OutsideTable`: it is reported, never invented. A coded image's quality snaps to
the nearest grid quality of its codec; a table without rows of that codec refuses it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.cut_points import CutTable
from objectives.design import DesignPoint, PointFailed
from objectives.objective import AccuracyResult

GRID_LEVELS = (1.0, 0.5, 0.25)  # step 2: share kept in every earlier node conv (issue #16: none, 50 %, 25 %)
GRID_BITS = (1, 2, 4, 8)
GRID_COUNTS = 5  # channel counts per cut conv
GRID_QUALITIES = (5, 15, 25, 35, 50, 65, 80, 95)  # the coded image (j=0): qualities of each lossy image codec
PROVENANCE = "# provenance: "  # the CSV's first line: this prefix + one JSON object

_SCALARS = ("map50", "map50_95", "map50_before_finetune", "node_macs", "edge_macs", "feature_values", "raw_bytes",
            "entropy_bytes", "best_codec", "weight_count", "peak_activation_values", "finetune_seconds",
            "finetune_steps", "seconds")
_JSON = ("cut_shape", "node_macs_per_layer", "kept_channels", "phase_seconds")


class OutsideTable(PointFailed):
    """The design table cannot answer this point (the message says why and what the table holds)."""


def grid_counts(channels: int, n: int = GRID_COUNTS) -> tuple[int, ...]:
    """``n`` channel counts from 1 to ``channels``, evenly spaced on a log scale: 1, 2, 4, 8, 16 of 16 channels;
    1, 4, 16, 64, 256 of 256 (fewer when ``channels`` is too small to give ``n`` distinct counts)."""
    if channels < 1 or n < 2:
        raise ValueError(f"grid_counts(channels={channels}, n={n}): need channels >= 1 and n >= 2")
    return tuple(sorted({max(1, min(channels, round(channels ** (i / (n - 1))))) for i in range(n)}))


def grid_points(cut: CutTable, bits: Iterable[int] = GRID_BITS, counts: int = GRID_COUNTS,
                levels: Iterable[float] = GRID_LEVELS, partitions: Iterable[int] | None = None,
                criterion: str = "l1", image_codecs: Iterable[str] = (),
                qualities: Iterable[int] = GRID_QUALITIES) -> list[DesignPoint]:
    """The grid's design points (codec and radio left at their defaults: they do not change the model), one per
    model: where two grid coordinates keep the same channels (a narrow model's 50 % and 25 % of 2 channels), the
    first stands for both."""
    levels = tuple(levels)
    pts: list[DesignPoint] = []
    for j in (range(len(cut)) if partitions is None else partitions):
        p = cut[j]
        if not p.is_split:
            pts.append(DesignPoint(j))
            if p.sends_image:
                pts += [DesignPoint(j, image_codec=c, quality=int(q)) for c in image_codecs for q in qualities]
            continue
        n = cut.conv_channels[p.conv] if p.conv is not None else None
        for b in bits:
            for k in grid_counts(n, counts) if n else (None,):
                for lvl in levels if p.earlier_convs else (1.0,):
                    pts.append(DesignPoint(j, int(b), k / n if n else 1.0,
                                           tuple((c, float(lvl)) for c in p.earlier_convs), criterion))
    seen: set[str] = set()
    return [q for q in pts if not (q.accuracy_key(cut) in seen or seen.add(q.accuracy_key(cut)))]


def level_of(point: DesignPoint) -> float:
    """The one step-2 ratio of a grid point (1.0 where there are no earlier convs)."""
    ratios = {float(r) for _, r in point.layer_keep}
    if len(ratios) > 1:
        raise ValueError(f"{point}: step-2 ratios {sorted(ratios)} are not one shared level")
    return ratios.pop() if ratios else 1.0


def row_of(point: DesignPoint, acc: AccuracyResult, cut: CutTable) -> dict[str, Any]:
    """One CSV row: the grid coordinates, then the measured fields."""
    p = cut[point.j]
    n = cut.conv_channels[p.conv] if p.is_split and p.conv is not None else 0
    row: dict[str, Any] = {
        "key": acc.key, "j": point.j, "bits": point.bits if p.is_split else "",
        "cut_kept": cut.kept(p.conv, point.cut_keep) if n else "", "cut_channels": n or "",
        "step2_keep": level_of(point) if p.earlier_convs else "",
        "image_codec": acc.image_codec, "quality": acc.quality if acc.image_codec else ""}
    row.update({k: getattr(acc, k) for k in _SCALARS})
    for c in sorted(acc.payload_mean_bytes):
        row[f"payload_mean_{c}"] = acc.payload_mean_bytes[c]
        row[f"payload_max_{c}"] = acc.payload_max_bytes[c]
    row.update({k: json.dumps(getattr(acc, k), sort_keys=True, separators=(",", ":")) for k in _JSON})
    return row


def result_of(row: dict[str, str]) -> AccuracyResult:
    """The :class:`AccuracyResult` a CSV row holds."""
    ints = {"node_macs", "edge_macs", "feature_values", "raw_bytes", "weight_count", "peak_activation_values",
            "finetune_steps"}
    d: dict[str, Any] = {"key": row["key"], "j": int(row["j"])}
    for k in _SCALARS:
        d[k] = row[k] if k == "best_codec" else int(row[k]) if k in ints else float(row[k])
    codecs = [k[len("payload_mean_"):] for k in row if k.startswith("payload_mean_")]
    d["payload_mean_bytes"] = {c: float(row[f"payload_mean_{c}"]) for c in codecs}
    d["payload_max_bytes"] = {c: int(row[f"payload_max_{c}"]) for c in codecs}
    d.update({k: json.loads(row[k]) for k in _JSON})
    if row.get("image_codec"):  # a coded image (a table from before they existed has no such column)
        d["image_codec"], d["quality"] = row["image_codec"], int(row["quality"])
    return AccuracyResult(**d)


def read_csv(path: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(provenance, rows) of a design table file."""
    text = Path(path).read_text()
    first, _, rest = text.partition("\n")
    if not first.startswith(PROVENANCE):
        raise ValueError(f"{path}: not a design table (the first line must start with {PROVENANCE.strip()!r})")
    try:
        prov = json.loads(first[len(PROVENANCE):])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the provenance line is not JSON ({e})") from None
    return prov, list(csv.DictReader(io.StringIO(rest)))


def write_csv(path: Path, provenance: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the whole table (atomically: a temporary file renamed over ``path``)."""
    path = Path(path)
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in names]
    buf = io.StringIO()
    buf.write(PROVENANCE + json.dumps(provenance, sort_keys=True) + "\n")
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)


def _earlier(cut: CutTable, j: int, level: float) -> tuple[int, ...]:
    """Channels every earlier conv of j keeps at a step-2 level (two levels may keep the same: one model)."""
    return tuple(cut.kept(c, level) for c in cut[j].earlier_convs)


def _nearest(value: float, grid: Iterable[float]) -> float:
    """The grid value nearest ``value`` on a log scale; a tie goes to the larger one."""
    return min(grid, key=lambda g: (abs(math.log(value) - math.log(g)), -g))


@dataclass
class DesignTable:
    """A measured grid, answered by lookup. ``snapped`` counts lookups answered by another (nearest) grid point,
    ``outside`` the points the table refused."""

    provenance: dict[str, Any]
    cut: CutTable
    results: dict[str, AccuracyResult]
    levels: tuple[float, ...]
    criterion: str
    snapped: int = 0
    outside: int = 0
    _counts: dict[tuple[int, int, tuple[int, ...]], list[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path, cut: CutTable) -> DesignTable:
        return cls.from_rows(*read_csv(path), cut)

    @classmethod
    def from_rows(cls, prov: dict[str, Any], rows: list[dict[str, str]], cut: CutTable) -> DesignTable:
        """The table of :func:`read_csv`'s provenance and rows, for ``cut``'s model."""
        results, counts = {}, {}
        for r in rows:
            results[r["key"]] = result_of(r)
            if r["cut_kept"]:
                j = int(r["j"])
                lvl = float(r["step2_keep"]) if r["step2_keep"] else 1.0
                counts.setdefault((j, int(r["bits"]), _earlier(cut, j, lvl)), []).append(int(r["cut_kept"]))
        grid = prov.get("grid", {})
        table = cls(prov, cut, results, tuple(grid.get("levels", GRID_LEVELS)), grid.get("criterion", "l1"))
        table._counts = {k: sorted(v) for k, v in counts.items()}
        return table

    @property
    def baseline_map50(self) -> float:
        """mAP@0.5 of j=0 (the image sent, the unsplit baseline on the edge)."""
        if "j=0" not in self.results:
            raise OutsideTable("the design table has no j=0 row (the baseline's mAP)")
        return self.results["j=0"].map50

    def _refuse(self, msg: str) -> OutsideTable:
        self.outside += 1
        return OutsideTable(f"design table: {msg}")

    def snap(self, point: DesignPoint) -> DesignPoint:
        """The grid point that answers ``point`` (see the module docstring), or :class:`OutsideTable`."""
        js = sorted({r.j for r in self.results.values()})
        if point.j not in js:
            raise self._refuse(f"j={point.j} is not in the table (it has j in {js})")
        p = self.cut[point.j]
        if point.coded_image:
            have = sorted(a.quality for a in self.results.values() if a.image_codec == point.image_codec)
            if not have:
                raise self._refuse(f"j={point.j} with {point.image_codec}: the table holds no {point.image_codec} "
                                   f"rows (build them with benchmarks/build_table.py --image-codecs)")
            q = min(have, key=lambda g: (abs(g - point.quality), -g))
            return DesignPoint(point.j, image_codec=point.image_codec, quality=q)
        if not p.is_split:
            return DesignPoint(point.j)
        bits = sorted({b for (j, b, _) in self._counts if j == point.j})
        if point.bits not in bits:
            raise self._refuse(f"bits={point.bits} at j={point.j} is not in the table (it has {bits})")
        level = 1.0
        if p.earlier_convs:
            ratios = [float(r) for _, r in point.layer_keep]
            lo, hi = min(self.levels), max(self.levels)
            if not ratios or any(not lo - 1e-9 <= r <= hi + 1e-9 for r in ratios):
                raise self._refuse(f"step-2 keep ratios {ratios} at j={point.j} are outside the table's levels "
                                   f"{sorted(self.levels)}")
            snapped = {_nearest(r, self.levels) for r in ratios}
            if len(snapped) > 1:
                raise self._refuse(f"step-2 keep ratios {ratios} at j={point.j} snap to different levels "
                                   f"{sorted(snapped)}; the table holds one level shared by every earlier conv "
                                   f"(space.shared_layer_keep=true)")
            level = snapped.pop()
        layer_keep = tuple((c, level) for c in p.earlier_convs)
        cut_keep = 1.0
        if p.conv is not None:
            n = self.cut.conv_channels[p.conv]
            have = self._counts.get((point.j, point.bits, _earlier(self.cut, point.j, level)))
            if not have:
                raise self._refuse(f"no row at j={point.j}, bits={point.bits}, step-2 level {level}")
            cut_keep = _nearest(self.cut.kept(p.conv, point.cut_keep), have) / n
        out = DesignPoint(point.j, point.bits, cut_keep, layer_keep, self.criterion)
        if out.pruned and point.pruned and point.criterion != self.criterion:
            raise self._refuse(f"criterion={point.criterion!r} is not in the table (it has {self.criterion!r})")
        return out

    def lookup(self, point: DesignPoint) -> AccuracyResult:
        """The measured result of ``point``'s grid point (:meth:`snap`)."""
        grid = self.snap(point)
        key = grid.accuracy_key(self.cut)
        if key not in self.results:
            raise self._refuse(f"{key} was not measured (the table has {len(self.results)} rows; finish it with "
                               f"benchmarks/build_table.py)")
        if key != point.accuracy_key(self.cut):
            self.snapped += 1
        return self.results[key]
