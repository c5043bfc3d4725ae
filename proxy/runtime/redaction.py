"""Credentials never reach a log: a filter on every handler blanks what would let a reader of
the log act as someone (link signatures, SAS and SigV4 signatures, Bearer tokens,
``Authorization`` values, secrets and passwords written as ``name=value`` or in URLs).

It rewrites the record (message, arguments, exception text) before any formatter sees it, so
uvicorn's access formatter, which unpacks its arguments, still gets its five fields.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

REDACTED = "REDACTED"

# Query parameters that are credentials: docproxy's own link signature, Azure SAS ``sig``,
# S3's SigV4 signature and session token, GCS V4 signatures, and tokens passed in a query.
_QUERY = (
    r"signature|sig|x-amz-signature|x-amz-security-token|x-goog-signature|"
    r"access_token|token|client_secret"
)
# Names whose value is a secret wherever it is written ``name=value`` or ``name: value``.
_SECRET_NAMES = (
    r"client_secret|secret_access_key|aws_secret_access_key|secret|signing_key|"
    r"account_key|accountkey|sharedaccesssignature|password|passwd|credentials"
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # ?signature=..., &sig=...: up to the next parameter, space or quote.
    (re.compile(rf"(?i)([?&;](?:{_QUERY})=)[^&;\s\"'#<>]+"), rf"\g<1>{REDACTED}"),
    # Authorization: <anything> up to the end of the header value (line or quote).
    (
        re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=,]\s*b?[\"']?)[^\"'\r\n]+"),
        rf"\g<1>{REDACTED}",
    ),
    # A Bearer or Basic credential wherever it appears, and any JWT.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # secret: x, "client_secret": "x", AccountKey=x; (connection strings, YAML, JSON, repr).
    (
        re.compile(rf"(?i)\b((?:{_SECRET_NAMES})[\"']?\s*[:=]\s*[\"']?)[^\"'&;,\s}}]+"),
        rf"\g<1>{REDACTED}",
    ),
    # scheme://user:password@host
    (re.compile(r"(//[^/\s:@]+:)[^@\s/]+@"), rf"\g<1>{REDACTED}@"),
)


# Cheap first look: text without any of these cannot hold a credential the patterns know.
# Matched against the lower-cased text: a case-insensitive alternation costs several times more.
_TRIGGER = re.compile(r"sig|token|authori|bearer|basic|eyj|secret|key|pass|credential|@")


def _may_hold_credential(text: str) -> bool:
    return _TRIGGER.search(text.lower()) is not None


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``REDACTED``."""
    if not _may_hold_credential(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    # Numbers stay numbers (``%d`` and uvicorn's status code need them); anything else is
    # logged as text anyway, so it is redacted as text.
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(value if isinstance(value, str) else str(value))


# Set on a record (``extra={VETTED: True}``) whose text is made only of fields that never hold
# a credential, such as the audit trail's: its text names ``token_id``, which would otherwise
# run every pattern over every event.
VETTED = "_docproxy_redacted"


class RedactingFilter(logging.Filter):
    """Blanks credentials in a record's arguments, message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, VETTED, False):
            return True  # vetted, or a second handler of the same record
        setattr(record, VETTED, True)
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_redact_value(v) for v in args)
        msg = record.msg if isinstance(record.msg, str) else str(record.msg)
        # A mapping's values lose their names when redacted alone ("%r" of one dict makes
        # that dict the arguments), so such a line is redacted whole.
        if isinstance(args, Mapping) or _may_hold_credential(msg):
            if record.args:
                # The format itself names a secret ("password=%s"): the argument alone did
                # not look like one, so the whole line is redacted and stays as text.
                try:
                    composed = record.getMessage()
                except Exception:  # a bad format: the handler reports it as usual
                    return True
                cleaned = redact(composed)
                if cleaned != composed:
                    record.msg, record.args = cleaned, ()
            else:
                record.msg = redact(msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


REDACTOR = RedactingFilter()


def install_redaction() -> None:
    """Put the filter on every handler this process has now: the root's, Python's last-resort
    handler, and every logger's (uvicorn's error and access logs, docproxy's own). Repeatable."""
    handlers: list[logging.Handler] = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    for handler in handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
