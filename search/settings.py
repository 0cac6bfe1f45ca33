"""The settings identity of measured results: what a search-time accuracy result depends on (data, model, train,
eval, the baseline's name), as one canonical JSON record that studies and design tables keep and that is compared
key by key, naming the first key that differs.

Which fields count is declared where they are defined (``objectives.settings.RESULTS`` field metadata): the final
training's budget never does, the subset check's keys only under ``train.finetune_when=needed``. A study or design
table written before this record existed keeps a ``repr`` of the settings dataclasses (it starts with ``(``); it
is recognized by computing that legacy form once (:func:`legacy_repr`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from objectives.settings import RESULTS
from search.config import RunConfig

VERSION = 2


def _fields(obj: Any, policy: str, bottleneck: bool = False) -> Any:
    """``asdict`` without the fields whose metadata says they do not change results under ``policy`` (and, for
    the learned bottleneck's training, unless ``bottleneck``: the space searches one)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            when = f.metadata.get(RESULTS)
            if when == "never" or (when == "when finetune_when=needed" and policy != "needed"):
                continue
            if when == "when bottleneck searched" and not bottleneck:
                continue
            if isinstance(when, tuple) and when[0] == "off when" and getattr(obj, when[1]) == when[2]:
                continue
            out[f.name] = _fields(getattr(obj, f.name), policy, bottleneck)
        return out
    if isinstance(obj, (list, tuple)):
        return [_fields(v, policy, bottleneck) for v in obj]
    return obj


def settings_record(rc: RunConfig, model: str) -> dict[str, Any]:
    """The settings a search-time result depends on, as a plain record."""
    policy = rc.train.finetune_when
    return {"version": VERSION, "data": _fields(rc.data, policy), "model": _fields(rc.model, policy),
            "train": _fields(rc.train, policy, bool(rc.space.bottleneck.latent)), "eval": _fields(rc.eval, policy),
            "baseline": model}


def search_settings(rc: RunConfig, model: str) -> str:
    """:func:`settings_record` as the canonical JSON string a study and a design table keep."""
    return json.dumps(settings_record(rc, model), sort_keys=True, separators=(",", ":"))


def legacy_repr(rc: RunConfig, model: str) -> str:
    """The settings as studies and tables before :data:`VERSION` 2 kept them: a ``repr`` of the dataclasses without
    ``train.final``, and with ``finetune_when='always'`` and the precheck keys dropped under ``always``."""
    train, ev = repr(rc.train).replace(f"final={rc.train.final!r}, ", ""), repr(rc.eval)
    train = train.replace(f", bottleneck={rc.train.bottleneck!r}", "")  # it did not exist then
    d = rc.train.distill
    if d.head_steps == 0:  # head distillation did not exist then; off, it is the same measurement
        train = train.replace(f", head_steps={d.head_steps!r}, head_layers={d.head_layers!r}, "
                              f"head_lr_scale={d.head_lr_scale!r}", "")
    if rc.train.finetune_when == "always":
        train = train.replace(", finetune_when='always'", "")
        ev = ev.replace(f", precheck_images={rc.eval.precheck_images!r}, precheck_margin={rc.eval.precheck_margin!r}",
                        "")
    return f"({rc.data!r}, {rc.model!r}, {train}, {ev}, {model!r})"


def digest(settings: str) -> str:
    return hashlib.sha256(settings.encode()).hexdigest()[:12]


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                left, right = (repr(d[k]) if k in d else "missing" for d in (a, b))
                return f"{path}{k}: {left} vs {right}"
            d = _first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{path.rstrip('.')}: {a!r} vs {b!r}"


def difference(stored: str | None, rc: RunConfig, model: str) -> str | None:
    """None when ``stored`` (a study's or table's settings) equals this run's, else the first key that differs as
    ``key: stored value vs this run's value``."""
    if stored is None:
        return None
    if stored.startswith("("):  # the legacy repr form
        if stored == legacy_repr(rc, model):
            return None
        return "settings recorded before the key-by-key record (a repr), and not this run's"
    try:
        old = json.loads(stored)
    except json.JSONDecodeError:
        return "unreadable settings record"
    return _first_difference(old, settings_record(rc, model))

