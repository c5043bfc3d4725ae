"""The direct download line reads exactly as the logging module would have written it."""

from __future__ import annotations

import io
import logging
import re

from proxy.http import accesslog
from proxy.runtime.logging import FORMAT

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
LINE = rf"{TIME} INFO docproxy: download 'a b' complete: 10240 bytes sent"


def test_the_direct_line_matches_the_formatter(monkeypatch):
    logger = logging.getLogger("docproxy")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.manager._clear_cache()
    try:
        accesslog.use_direct_handler(handler)
        accesslog.log_download("'a b'", "complete", 10240)
        accesslog.use_direct_handler(None)
        accesslog.log_download("'a b'", "complete", 10240)  # through logger.info
        monkeypatch.setattr(logger, "level", logging.WARNING)
        logger.manager._clear_cache()
        accesslog.use_direct_handler(handler)
        accesslog.log_download("'quiet'", "complete", 1)  # level off: nothing
    finally:
        accesslog.use_direct_handler(None)
        logger.manager._clear_cache()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.fullmatch(LINE, line)
