"""``bench/results/history.md``: one line per full run, each row's ratio (or verdict).

The ratios sit in one cell as ``row ratio`` pairs, so a run with more rows than earlier ones
(rows are added over time) still fits the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

HEADER = """# docproxy benchmark history

One line per full run of ``python -m bench`` (which adds it): each row's ratio of docproxy to
its baseline, measured in the same run; a row without a baseline says whether it met its
target. "(no)" marks a row that missed its target. ``latest.md`` has the last run in full, and
``bench/README.md`` says what each row measures.

| date (UTC) | commit | machine | rows: ratio (or verdict) |
|---|---|---|---|
"""


def cell(ratio: str, met: str) -> str:
    met = met.strip("*")
    if ratio == "-":
        return met
    return f"{ratio} (no)" if met == "no" else ratio


def line(date: str, commit: str, machine: str, rows: Iterable[tuple[str, str, str]]) -> str:
    """One line from (row number, ratio, met) in table order."""
    ratios = " · ".join(f"{number} {cell(ratio, met)}" for number, ratio, met in rows)
    return f"| {date} | {commit} | {machine} | {ratios} |\n"


def add(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as out:
        out.write(text)
