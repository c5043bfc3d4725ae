"""The audit trail: one event on the ``docproxy.audit`` logger per token issued or refused, per
presigned URL and per download, with who, what and how it ended. Never a secret, a token or a
signature: a token is named by its id (``jti``) only.

With ``server.log_format: json`` each event is one object whose fields sit beside ``event``;
in text, the fields follow the event as ``key=value``.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.auth.tokens import Caller
from proxy.runtime.logging import HeldEvents
from proxy.runtime.redaction import VETTED

audit_logger = logging.getLogger("docproxy.audit")
_events = HeldEvents(audit_logger)  # JSON events: held milliseconds, written together
_as_json = False
_on = False  # server.audit_log, kept here: asked on every request


def enable(
    on: bool,
    log_format: str = "text",
    handler: logging.StreamHandler | None = None,  # type: ignore[type-arg]
) -> None:
    """Events are written only when ``server.audit_log`` is on (a flag asked when off).
    ``handler``: docproxy's own stderr handler, which JSON events are written to directly."""
    global _as_json, _on
    audit_logger.setLevel(logging.INFO if on else logging.WARNING)
    _on = on
    _as_json = log_format == "json"
    if handler is not None:
        _events.handler = handler


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
    """Write one event (``fields`` are its own, unchanged from now on); ``text`` starts the
    text line (the JSON one carries ``event``)."""
    if _as_json:
        _events.add(event, fields)
        return
    pairs = " ".join(f"{key}={value!r}" for key, value in fields.items())
    extra = {"event": event, "fields": fields, VETTED: True}
    audit_logger.info("%s %s", text, pairs, extra=extra)
