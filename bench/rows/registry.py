"""Row group modules, in table order. Adding a row is one module in this package (with its
``GROUP``) and one line here."""

from __future__ import annotations

import importlib
import re

from bench.rows.base import RowGroup

_MODULES: tuple[str, ...] = (
    "bench.rows.streams",  # 1, 2, 2w: one and many big downloads vs nginx and rclone
    "bench.rows.accel",  # 1b: nginx in front, X-Accel-Redirect
    "bench.rows.small",  # 3, 3w: 10 KiB documents, one and two workers
    "bench.rows.hostile",  # 3h: row 3 while hostile clients are held open
    "bench.rows.presign",  # 4, 4b: POST /download vs bare Starlette
    "bench.rows.observe",  # 3o, 4o: rows 3 and 4 with metrics and JSON audit logs on vs off
    "bench.rows.state",  # 3r, 4r: rows 3 and 4 with the shared state in Redis
    "bench.rows.slow",  # 5: slow clients, memory
    "bench.rows.s3",  # 6: S3 download vs s3fs
    "bench.rows.sidecar",  # 7: idle memory and start time of the embedded default
    "bench.rows.archive",  # 8: a ZIP of many documents vs a single download, memory
)


def groups() -> list[RowGroup]:
    return [importlib.import_module(name).GROUP for name in _MODULES]


def known_rows() -> tuple[str, ...]:
    """Every row number, in table order."""
    return tuple(sorted((n for group in groups() for n in group.numbers), key=table_order))


def table_order(number: str) -> tuple[int, str]:
    """1, 1b, 2, 2w, 3, 3w, ...: by the number, then its letter."""
    match = re.match(r"\d+", number)
    return (int(match.group()) if match else 0, number)
