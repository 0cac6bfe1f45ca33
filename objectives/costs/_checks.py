"""Range checks shared by the cost-model profiles."""

from __future__ import annotations

import math


def check_numbers(obj: object, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming ``Class.field=value`` when a field is not a number > 0 (``positive``) or
    >= 0 (``non_negative``)."""
    for n in positive + non_negative:
        v = getattr(obj, n)
        bad = not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v)
        strict = n in positive
        if bad or (v <= 0 if strict else v < 0):
            raise ValueError(f"{type(obj).__name__}.{n}={v!r} must be {'> 0' if strict else '>= 0'}")
