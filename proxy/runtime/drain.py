"""Whether this worker is draining: it has stopped accepting and lets running downloads finish.

Set once, when the server begins its graceful shutdown (SIGTERM or SIGINT); anything that
should answer differently from then on (a readiness probe) asks ``is_draining()``.
"""

from __future__ import annotations

_draining = False


def begin_draining() -> None:
    global _draining
    _draining = True


def is_draining() -> bool:
    return _draining
