"""What every benchmark script writes: its figures as a CSV and a Markdown table under ``docs/results/`` (or
``--out``), with the command that produced them, besides what it prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table (4 significant digits), without the optional tabulate dependency."""
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def default_out(script: str) -> Path:
    """``docs/results/<script name without bench_>.csv``."""
    return RESULTS / f"{Path(script).stem.removeprefix('bench_')}.csv"


def write(rows: list[dict] | pd.DataFrame, out: Path, title: str, note: str = "") -> str:
    """Write ``rows`` to ``out`` (CSV) and ``out`` with ``.md`` (title, the command line, ``note``, the table);
    returns the Markdown."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    cmd = " ".join(["python", str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() and
                    Path(sys.argv[0]).is_relative_to(ROOT) else sys.argv[0], *sys.argv[1:]])
    text = f"# {title}\n\n`{cmd}`{': ' + note if note else ''}\n\n{markdown(df)}\n"
    out.with_suffix(".md").write_text(text)
    return text
