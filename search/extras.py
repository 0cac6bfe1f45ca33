"""Optional extras (pyproject's ``[project.optional-dependencies]``): a mode that needs one checks for it first and
fails with one line naming the ``pip install`` that fixes it, never with a ModuleNotFoundError traceback."""

from __future__ import annotations

import importlib.util

from search.profiles import ConfigError

EXTRAS = {  # extra -> (the modules it provides, what needs it)
    "deploy": (("onnx", "onnxruntime", "onnxscript"), "mode=deploy and the reference runtime (search.deploy)"),
    "postgres": (("psycopg",), "storage=postgres"),
    "bench": (("matplotlib",), "the benchmarks' plots"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in EXTRAS[extra][0] if importlib.util.find_spec(m) is None]


def require(extra: str) -> None:
    """Raise :class:`ConfigError` with the install line when a module of ``extra`` is missing."""
    gone = missing(extra)
    if gone:
        raise ConfigError(f"{EXTRAS[extra][1]} needs the '{extra}' extra ({', '.join(gone)} not installed): "
                          f"pip install -e '.[{extra}]' (or pip install 'splitcnn-search[{extra}]')")
