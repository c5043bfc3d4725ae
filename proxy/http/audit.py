"""The audit trail: one event on the ``docproxy.audit`` logger per token issued or refused, per
presigned URL and per download, with who, what and how it ended. Never a secret, a token or a
signature: a token is named by its id (``jti``) only.

With ``server.log_format: json`` each event is one object whose fields sit beside ``event``;
in text, the fields follow the event as ``key=value``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy.auth.tokens import Caller
from proxy.runtime.logging import HELD_LINES, JsonFormatter, json_line, json_line_bytes
from proxy.runtime.redaction import VETTED, RedactingFilter

audit_logger = logging.getLogger("docproxy.audit")
_as_json = False
_on = False  # server.audit_log, kept here: asked on every request
_handler: logging.StreamHandler | None = None  # type: ignore[type-arg]
_alone: list[logging.Handler] = []  # [_handler]: the handlers an event may reach to be written
_vetted: list[Any] = []  # the handler's filters when all were last found credential filters


def enable(
    on: bool,
    log_format: str = "text",
    handler: logging.StreamHandler | None = None,  # type: ignore[type-arg]
) -> None:
    """Events are written only when ``server.audit_log`` is on (a flag asked when off).
    ``handler``: docproxy's own stderr handler, which JSON events are written to directly."""
    global _as_json, _handler, _alone, _on
    audit_logger.setLevel(logging.INFO if on else logging.WARNING)
    _on = on
    _as_json = log_format == "json"
    if handler is not None:
        _handler, _alone = handler, [handler]


def enabled() -> bool:
    return _on


def caller_fields(caller: Caller | None, document: str, remote: str | None) -> dict[str, Any]:
    """The fields of a request about ``document``: the event fills in the rest in place."""
    if caller is None:  # a proxy link: its caller was checked when the link was made
        return {
            "client": None,
            "subject": None,
            "group": None,
            "token_id": None,
            "document": document,
            "remote": remote,
        }
    return {
        "client": caller.client_id,
        "subject": caller.email or caller.client_id,
        "group": caller.group_name,
        "token_id": caller.token_id,
        "document": document,
        "remote": remote,
    }


def record(event: str, text: str, fields: dict[str, Any]) -> None:
    """Write one event; ``text`` starts the text line (the JSON one carries ``event``)."""
    if _as_json and _write_directly(event, fields):
        return
    extra = {"event": event, "fields": fields}
    if _as_json:
        # The formatter writes the fields, not the message: the message is left short, so
        # the credential filter has nothing to search (the fields hold ids, never secrets).
        audit_logger.info(event, extra=extra)
        return
    pairs = " ".join(f"{key}={value!r}" for key, value in fields.items())
    audit_logger.info("%s %s", text, pairs, extra={**extra, VETTED: True})


def _vet(filters: list[Any]) -> bool:
    """Whether every filter is the credential filter; if so, later events compare the list
    with this one instead of checking each filter again."""
    global _vetted
    if not all(isinstance(f, RedactingFilter) for f in filters):
        return False
    _vetted = list(filters)
    return True


def _write_directly(event: str, fields: dict[str, Any]) -> bool:
    """The JSON line written straight to docproxy's own handler, as its formatter would, when
    that handler is the only one the event would reach: a record, the logger's look-ups and
    the handler's chain cost a sizeable part of a small download. The credential filter on
    that handler reads a record's message, which an audit event leaves as its bare name."""
    handler = _handler
    parent = audit_logger.parent
    if (
        handler is None
        or audit_logger.handlers
        or audit_logger.filters
        or not audit_logger.propagate
        or parent is None
        or parent.handlers != _alone
        or parent.filters
        or not isinstance(handler.formatter, JsonFormatter)
        or (handler.filters != _vetted and not _vet(handler.filters))
    ):
        return False
    stream = handler.stream
    raw = _utf8_bytes_of(stream)
    if raw is not None:
        line = json_line_bytes(time.time(), "INFO", audit_logger.name, event, fields)
        if HELD_LINES.hold(raw, line):  # written with the others held, within milliseconds
            return True
    with handler.lock:  # type: ignore[union-attr]
        try:
            if raw is None:
                text = json_line(time.time(), "INFO", audit_logger.name, event, fields)
                stream.write(text + "\n")
                stream.flush()  # as StreamHandler.flush, which would take the held lock again
            else:
                raw.write(line)
                raw.flush()
        except Exception:  # as StreamHandler.emit: a broken stderr must not fail downloads
            record = logging.LogRecord(audit_logger.name, logging.INFO, "", 0, event, (), None)
            handler.handleError(record)
    return True


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
