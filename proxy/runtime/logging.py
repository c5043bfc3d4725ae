"""docproxy's own log lines (refusals, storage faults, download outcomes) to stderr, as text or
as one JSON object per line (``server.log_format``), uvicorn's lines included."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import logging
import threading
import time
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from proxy.runtime.redaction import install_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")

logger = logging.getLogger("docproxy")
# Audit lines are held this long at most, or until this many are, and then written together.
HOLD_SECONDS = 0.005
HOLD_MOST = 256


#: The request being served by this task (set by ``proxy.http.requestid``), for every line.
REQUEST_ID: ContextVar[str | None] = ContextVar("docproxy_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event``
    (the message), ``request_id`` when a request is being served, and an audit record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        event = getattr(record, "event", None)
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == 5
        ):
            event, fields = "request", _access_fields(record.args)
        if record.exc_info:
            fields = {**(fields or {}), "exception": self.formatException(record.exc_info)}
        return json_line(
            record.created, record.levelname, record.name, event or record.getMessage(), fields
        )


def json_line(
    created: float, level: str, name: str, event: str, fields: dict[str, Any] | None
) -> str:
    """One log line as JSON (without its newline): what ``JsonFormatter`` writes."""
    line = _line(created, level, name, event, fields)
    # orjson: a line costs a sixth of the standard library's encoder, on every audited request.
    encoder = _orjson()
    try:
        return encoder.dumps(line, default=str).decode()
    except encoder.JSONEncodeError:  # what orjson refuses (an integer beyond 64 bits): as text
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


def json_line_bytes(
    created: float, level: str, name: str, event: str, fields: dict[str, Any] | None
) -> bytes:
    """``json_line`` in UTF-8 with its newline, for a binary stream: no decoding of orjson's
    bytes into text that the text stream would encode again."""
    line = _line(created, level, name, event, fields)
    encoder = _orjson()
    try:
        return encoder.dumps(line, default=str, option=encoder.OPT_APPEND_NEWLINE)
    except encoder.JSONEncodeError:
        text = json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))
        return (text + "\n").encode("utf-8", "backslashreplace")


def _line(
    created: float, level: str, name: str, event: str, fields: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "time": _utc(created),
        "level": level,
        "logger": name,
        "event": event,
        "request_id": REQUEST_ID.get(),
        **(fields or {}),
    }


class HeldLines:
    """Lines held for a few milliseconds, then written in one call: under load that is one write
    for dozens of requests instead of a system call and the file system's work for each.
    docproxy's own handler (``OrderedStreamHandler``) writes what is held before a line of its
    own, so its lines and these stay in order; a worker's exit writes what is left."""

    def __init__(self, seconds: float = HOLD_SECONDS, most: int = HOLD_MOST) -> None:
        self.seconds = seconds
        self.most = most  # lines: more are written at once
        self._lines: list[bytes] = []
        self._stream: Any = None
        self._lock = threading.Lock()  # a line may be logged from another thread
        self._at_exit = False

    def hold(self, stream: Any, line: bytes) -> bool:
        """Hold ``line`` for the byte ``stream``; False outside a running event loop (the
        caller writes it at once)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        with self._lock:
            if self._stream is not stream:
                self._write_held()
                self._stream = stream
            lines = self._lines
            lines.append(line)
            held = len(lines)
            if held >= self.most:
                self._write_held()
        if held == 1:
            loop.call_later(self.seconds, self.write)
            if not self._at_exit:
                atexit.register(self.write)
                self._at_exit = True
        return True

    def write(self) -> None:
        """Write every held line now."""
        if self._lines:
            with self._lock:
                self._write_held()

    def _write_held(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            try:
                self._stream.write(b"".join(lines))
                self._stream.flush()
            except Exception:  # as StreamHandler.emit: a broken stderr must not fail downloads
                pass


HELD_LINES = HeldLines()


class OrderedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """docproxy's stderr handler: the held lines go out before each line of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        HELD_LINES.write()
        super().emit(record)


@functools.cache
def _orjson() -> ModuleType:
    """orjson, imported by the first JSON line: text logs without an audit trail never need it."""
    import orjson

    return orjson


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    """uvicorn's access line as fields, the path without its query: a proxy link's signature
    is in the query, and signatures never reach a log."""
    remote, method, target, version, status = args
    return {
        "remote": remote,
        "method": method,
        "path": str(target).split("?", 1)[0],
        "http_version": version,
        "status": status,
    }


_second = -1
_second_text = ""
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))  # no formatting per line


def _utc(created: float) -> str:
    global _second, _second_text
    second = int(created)
    if second != _second:  # the date and time are formatted once a second
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return _second_text + _MILLISECONDS[int((created - second) * 1000)]


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)


def configure_logging(level: str, log_format: str = "text") -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """Give the ``docproxy`` logger a stderr handler (once per process) and set its level,
    and put the credential filter on every handler the process has (uvicorn's included).

    Returns the handler when this call made it, None when the logger had one already.
    """
    made = None
    if not logger.handlers:
        made = OrderedStreamHandler()
        logger.addHandler(made)
        logger.propagate = False
    for handler in logger.handlers:
        handler.setFormatter(formatter(log_format))
    logger.setLevel(level.upper())
    install_redaction()
    return made


def uvicorn_log_config(log_format: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``log_format``: None keeps uvicorn's own text lines."""
    if log_format != "json":
        return None
    json_formatter = {"()": "proxy.runtime.logging.JsonFormatter"}
    stderr = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    stdout = {**stderr, "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": json_formatter},
        "handlers": {"default": stderr, "access": stdout},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},  # libraries' warnings too
    }
