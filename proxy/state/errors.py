"""The one fault of the shared state: its store (Redis or the SQLite file) failed."""

from __future__ import annotations


class StateFailed(Exception):
    """Redis or the state's SQLite file could not be read or written; the message says why."""
