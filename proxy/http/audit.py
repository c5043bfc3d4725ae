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

audit_logger = logging.getLogger("docproxy.audit")


def enable(on: bool) -> None:
    """Events are written only when ``server.audit_log`` is on (a level check when off)."""
    audit_logger.setLevel(logging.INFO if on else logging.WARNING)


def enabled() -> bool:
    return audit_logger.isEnabledFor(logging.INFO)


def caller_fields(caller: Caller | None) -> dict[str, Any]:
    if caller is None:  # a proxy link: its caller was checked when the link was made
        return {"client": None, "subject": None, "group": None, "token_id": None}
    return {
        "client": caller.client_id,
        "subject": caller.email or caller.client_id,
        "group": caller.group_name,
        "token_id": caller.token_id,
    }


def record(event: str, text: str, fields: dict[str, Any]) -> None:
    """Write one event; ``text`` starts the text line (the JSON one carries ``event``)."""
    pairs = " ".join(f"{key}={value!r}" for key, value in fields.items())
    audit_logger.info("%s %s", text, pairs, extra={"event": event, "fields": fields})
