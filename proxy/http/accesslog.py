"""The one log line per download, written without building a ``LogRecord``.

Through ``logger.info``, a download's outcome line costs a record, a look-up of the caller,
the formatter and its ``strftime``: a sizeable part of a small download. When docproxy's own
stderr handler is the logger's only handler,
the line is formatted here, exactly as that handler's formatter would (the time string is
made once a second), and written to its stream under its lock. Any other set-up (a handler
added by an embedding application, pytest's capture, a filter) gets a plain ``logger.info``.
"""

from __future__ import annotations

import logging
import time

from proxy.runtime.redaction import REDACTOR, redact

logger = logging.getLogger("docproxy")

_handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
_ONLY_REDACTION = [REDACTOR]  # the handler's filters when docproxy set it up
_second = -1
_second_text = ""


def use_direct_handler(handler: logging.StreamHandler | None) -> None:  # type: ignore[type-arg]
    """Register docproxy's own handler (``proxy.runtime.logging``), or None to always use
    ``logger.info``."""
    global _handler
    _handler = handler


def log_download(label: str, outcome: str, sent: int) -> None:
    """``download <label> <outcome>: <sent> bytes sent`` at INFO."""
    handler = _handler
    if not logger.isEnabledFor(logging.INFO):
        return
    if (
        handler is None
        or logger.handlers != [handler]
        or logger.filters
        or (handler.filters and handler.filters != _ONLY_REDACTION)
        or handler.level > logging.INFO
    ):
        logger.info("download %s %s: %d bytes sent", label, outcome, sent)
        return
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        _second = second
    # The line skips the handler's filters, so it is redacted here as they would.
    line = (
        f"{_second_text},{int((now - second) * 1000):03d} INFO docproxy: "
        f"download {redact(label)} {outcome}: {sent} bytes sent\n"
    )
    with handler.lock:  # type: ignore[union-attr]
        try:
            handler.stream.write(line)
            handler.flush()
        except Exception:  # as StreamHandler.emit: a broken stderr must not fail downloads
            handler.handleError(logging.LogRecord(logger.name, logging.INFO, "", 0, line, (), None))
