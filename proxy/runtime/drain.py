"""Whether this process is shutting down: set once on the stop signal, read by anything that
must stop taking new work (readiness answers 503 from then on)."""

from __future__ import annotations

_draining = False


def begin_draining() -> None:
    global _draining
    _draining = True


def is_draining() -> bool:
    return _draining
