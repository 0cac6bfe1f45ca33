"""``table=<csv>``: a study answered from the design table (:mod:`objectives.table`), checked against the run."""

from __future__ import annotations

from pathlib import Path

from models import cut_points
from objectives.table import DesignTable
from objectives.table import read_csv as read_table
from search import settings
from search.config import RunConfig
from search.profiles import ConfigError, load_profile
from search.workbench import model_config


def load_design_table(rc: RunConfig) -> DesignTable:
    """The design table of ``rc.table``, checked against this run: it must have been measured with the run's data,
    model, train and eval settings, and hold payload sizes for every codec of the space."""
    path = Path(rc.table)
    try:
        prov, rows = read_table(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"table={rc.table!r}: {e}") from None
    for k in ("settings", "model", "num_classes", "digest"):
        if k not in prov:
            raise ConfigError(f"table={rc.table!r}: its provenance line lacks {k!r} (rebuild it with "
                              f"benchmarks/build_table.py)")
    diff = settings.difference(prov["settings"], rc, prov["model"])
    if diff:
        raise ConfigError(f"table={rc.table!r}: measured with other data/model/train/eval settings than this run's "
                          f"(first difference, table vs run: {diff})")
    design = DesignTable.from_rows(prov, rows, cut_points(model_config(rc, int(prov["num_classes"]))))
    need = {load_profile("codec", n).codec for n in rc.space.codecs}  # the algorithms behind the space's codecs
    have = set(next(iter(design.results.values())).payload_mean_bytes) if design.results else set()
    if not design.results or not need <= have:
        raise ConfigError(f"table={rc.table!r}: no payload sizes for codec algorithm(s) {sorted(need - have)} "
                          f"(it has {sorted(have)}); drop them from space.codecs")
    return design
