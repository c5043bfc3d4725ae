"""docproxy's own log lines (refusals, storage faults, download outcomes) to stderr, as text or
as one JSON object per line (``server.log_format``), uvicorn's lines included."""

from __future__ import annotations

import asyncio
import atexit
import collections
import functools
import json
import logging
import threading
import time
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from proxy.runtime.redaction import RedactingFilter, install_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")

logger = logging.getLogger("docproxy")
# Events are held this long at most, or until this many are, and then written together.
HOLD_SECONDS = 0.005
HOLD_MOST = 256
MISSED_AFTER = 1.0  # seconds: a timed write this late is taken to be lost


#: The request being served by this task (set by ``proxy.http.requestid``), for every line.
REQUEST_ID: ContextVar[str | None] = ContextVar("docproxy_request_id", default=None)
_CURRENT = object()  # a record without a request id of its own: the task's, when formatted


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
        request_id = record.__dict__.get("request_id", _CURRENT)
        return json_line(
            record.created,
            record.levelname,
            record.name,
            event or record.getMessage(),
            fields,
            REQUEST_ID.get() if request_id is _CURRENT else request_id,
        )


def json_line(
    created: float,
    level: str,
    name: str,
    event: str,
    fields: dict[str, Any] | None,
    request_id: str | None,
) -> str:
    """One log line as JSON (without its newline): what ``JsonFormatter`` writes."""
    line = {
        "time": _utc(created),
        "level": level,
        "logger": name,
        "event": event,
        "request_id": request_id,
        **(fields or {}),
    }
    # orjson: a line costs a sixth of the standard library's encoder, on every audited request.
    encoder = _orjson()
    try:
        return encoder.dumps(line, default=str).decode()
    except encoder.JSONEncodeError:  # what orjson refuses (an integer beyond 64 bits): as text
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


# A held event: when it was made, the request that made it, its name and its fields.
Held = tuple[float, str | None, str, dict[str, Any]]


class HeldEvents:
    """The INFO events of one logger, held for a few milliseconds and then written together.

    Under load that is one write for dozens of requests instead of a system call and the file
    system's work for each, and each request does no more than note its event: whether the
    events may go straight to docproxy's own handler, and their encoding, are settled once per
    write. They go straight to that handler's stream, as its formatter would write them, when
    it is the only handler they would reach and its filters are the credential filter (which
    reads a record's message, and an event's message is its bare name); else each goes
    through the logger as a record. docproxy's handler (``OrderedStreamHandler``) writes what
    is held before a line of its own, so the order of lines is kept; a worker's exit writes
    what is left.
    """

    def __init__(
        self, logger: logging.Logger, seconds: float = HOLD_SECONDS, most: int = HOLD_MOST
    ) -> None:
        self.logger = logger
        self.seconds = seconds
        self.most = most  # events: more are written at once
        self.handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
        # Appended to by the event loop's thread, emptied by whichever writes (both atomic).
        self._held: collections.deque[Held] = collections.deque()
        self._due_before = 0.0  # until then, a timed write is scheduled
        self._writing = threading.RLock()  # writes in order; a record written may write again
        self._vetted: list[Any] = []  # the handler's filters when last found credential filters
        _HELD.append(self)
        atexit.register(self.write)

    def add(self, event: str, fields: dict[str, Any]) -> None:
        """Note an event (``fields`` are its own, unchanged from now on): held on a running
        event loop, else written at once."""
        created = time.time()
        held = (created, REQUEST_ID.get(), event, fields)
        if created < self._due_before:  # the scheduled write takes this one too
            self._held.append(held)
            if len(self._held) >= self.most:
                self.write()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to write it later
            self._write([held])
            return
        self._held.append(held)
        # Past this time the write is taken to be lost with its loop (a test's loop, closed):
        # the next event schedules another.
        self._due_before = created + self.seconds + MISSED_AFTER
        loop.call_later(self.seconds, self.write)

    def write(self) -> None:
        """Write every held event now."""
        self._due_before = 0.0
        if not self._held:
            return
        with self._writing:
            held = self._held
            events = [held.popleft() for _ in range(len(held))]
            if events:
                self._write(events)

    def _write(self, events: list[Held]) -> None:
        handler = self._only_handler()
        if handler is None:
            for created, request_id, event, fields in events:
                self._log(created, request_id, event, fields)
            return
        name, stream = self.logger.name, handler.stream
        raw = _utf8_bytes_of(stream)
        with handler.lock:  # type: ignore[union-attr]
            try:
                if raw is not None:
                    raw.write(_encoded(name, events))
                    raw.flush()
                else:
                    stream.write(_as_text(name, events))
                    stream.flush()  # as StreamHandler.flush, which would take the held lock again
            except Exception:  # as StreamHandler.emit: a broken stderr must not fail downloads
                record = logging.LogRecord(name, logging.INFO, "", 0, events[0][2], (), None)
                handler.handleError(record)

    def _log(
        self, created: float, request_id: str | None, event: str, fields: dict[str, Any]
    ) -> None:
        record = self.logger.makeRecord(
            self.logger.name,
            logging.INFO,
            "(event)",
            0,
            event,
            (),
            None,
            extra={"event": event, "fields": fields, "request_id": request_id},
        )
        record.created, record.msecs = created, (created - int(created)) * 1000
        self.logger.handle(record)

    def _only_handler(self) -> logging.StreamHandler | None:  # type: ignore[type-arg]
        """docproxy's handler, when it is the only place the logger's events reach and would
        write them as this does."""
        logger, handler = self.logger, self.handler
        parent = logger.parent
        if (
            handler is None
            or logger.handlers
            or logger.filters
            or not logger.propagate
            or parent is None
            or parent.handlers != [handler]
            or parent.filters
            or not isinstance(handler.formatter, JsonFormatter)
            or (handler.filters != self._vetted and not self._vet(handler.filters))
        ):
            return None
        return handler

    def _vet(self, filters: list[Any]) -> bool:
        """Whether every filter is the credential filter; if so, later writes compare the list
        with this one instead of checking each filter again."""
        if not all(isinstance(f, RedactingFilter) for f in filters):
            return False
        self._vetted = list(filters)
        return True


def _encoded(name: str, events: list[Held]) -> bytes:
    """The INFO lines of ``events`` in UTF-8, as ``json_line`` makes them, its steps written out
    in one loop (the line of each request goes through here)."""
    encoder = _orjson()
    dumps, option = encoder.dumps, encoder.OPT_APPEND_NEWLINE
    try:
        return b"".join(
            [
                dumps(
                    {
                        "time": _utc(created),
                        "level": "INFO",
                        "logger": name,
                        "event": event,
                        "request_id": request_id,
                        **fields,
                    },
                    default=str,
                    option=option,
                )
                for created, request_id, event, fields in events
            ]
        )
    except encoder.JSONEncodeError:  # a line orjson refuses: each as JsonFormatter writes it
        return _as_text(name, events).encode("utf-8", "backslashreplace")


def _as_text(name: str, events: list[Held]) -> str:
    """The INFO lines of ``events``, each as ``JsonFormatter`` writes it, with its newline."""
    return "".join([json_line(t, "INFO", name, e, f, r) + "\n" for t, r, e, f in events])


_HELD: list[HeldEvents] = []  # every logger's held events, written before docproxy's own lines


class OrderedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """docproxy's stderr handler: the held events go out before each line of its own."""

    def emit(self, record: logging.LogRecord) -> None:
        for held in _HELD:
            held.write()
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


_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))  # no formatting per line
_last_second: tuple[int, str] = (-1, "")
_last_millisecond: tuple[int, str] = (-1, "")


def _utc(created: float) -> str:
    """``created`` in ISO 8601, UTC, to the millisecond: the date and time are formatted once a
    second, and the lines of one millisecond (a dozen, under load) share their text."""
    global _last_second, _last_millisecond
    millisecond = int(created * 1000)
    if millisecond == _last_millisecond[0]:
        return _last_millisecond[1]
    second, fraction = divmod(millisecond, 1000)
    if second != _last_second[0]:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    text = _last_second[1] + _MILLISECONDS[fraction]
    _last_millisecond = (millisecond, text)
    return text


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


_binary: tuple[object, Any] = (None, None)  # a text stream, and its UTF-8 byte stream or None


def _utf8_bytes_of(stream: Any) -> Any:
    """The byte stream under a UTF-8 text stream that holds nothing back (stderr's: written
    through), else None: a line written there in bytes follows everything written before it,
    and orjson's bytes are not decoded into text for the text stream to encode again."""
    global _binary
    if _binary[0] is not stream:
        buffer = getattr(stream, "buffer", None)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        through = getattr(stream, "write_through", False)
        usable = buffer is not None and encoding in ("utf-8", "utf8") and through
        _binary = (stream, buffer if usable else None)
    return _binary[1]
