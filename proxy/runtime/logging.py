"""docproxy's own log lines (refusals, storage faults, download outcomes) to stderr."""

from __future__ import annotations

import logging

from proxy.runtime.redaction import install_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("docproxy")


def configure_logging(level: str) -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """Give the ``docproxy`` logger a stderr handler (once per process) and set its level,
    and put the credential filter on every handler the process has (uvicorn's included).

    Returns the handler when this call made it, None when the logger had one already.
    """
    made = None
    if not logger.handlers:
        made = logging.StreamHandler()
        made.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(made)
        logger.propagate = False
    logger.setLevel(level.upper())
    install_redaction()
    return made
