"""The errors of the HTTP layer, and the one table that answers every error in the API's words.

Request parsing raises the ``RequestError`` classes below; the auth package raises
``Unauthorized`` and the document service its domain errors (``proxy.documents.errors``).
``ANSWERS`` says what the Download Document API answers for each: a status and a message, or,
for the faults of a store or of the catalog, a 500 whose message names what the endpoint was
doing (``Action``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.auth.errors import Unauthorized
from proxy.documents.errors import (
    ArchiveTooLarge,
    CatalogFailed,
    DocumentNotFound,
    NoFilePath,
    StoreFailed,
)
from proxy.state.errors import StateFailed


class RequestError(Exception):
    """A request refused before any document is looked at.

    ``message`` replaces the table's message when given (a 435 names the field at fault);
    ``headers`` go out with the answer (``Allow``, ``Content-Range``).
    """

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(message or type(self).__name__)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(RequestError):
    """A body or field the API's 435 covers whose fault is not the id itself (bad JSON, type)."""


class DocumentIdRequired(RequestError):
    """The document id is missing, empty, blank or not a string."""


class BearerRefused(RequestError):
    """No usable Bearer token on an endpoint that needs one; ``headers`` carry the challenge
    (RFC 6750: ``Bearer``, with ``error="invalid_token"`` when a token was presented)."""


class PreconditionFailed(RequestError):
    """If-Match or If-Unmodified-Since did not hold."""


class RangeNotSatisfiable(RequestError):
    """The one range asked for lies past the end of the object."""


class TooManyFailedLogins(RequestError):
    """Too many wrong client credentials for this client id or from this address, lately."""


class RouteNotFound(RequestError):
    """No endpoint has this path."""


class MethodNotAllowed(RequestError):
    """The path is an endpoint's, the method is not."""


class MalformedRequest(RequestError):
    """The bytes are not an HTTP/1.1 request (answered by the server before any endpoint)."""


class BadHost(RequestError):
    """``Host`` missing on HTTP/1.1, given twice, malformed or not one of the allowed hosts."""


class HeadTooLarge(RequestError):
    """The request line and header fields exceed ``server.max_header_bytes`` or
    ``server.max_header_fields``."""


class TargetTooLong(RequestError):
    """The request target exceeds ``server.max_target_bytes``."""


class RequestTimeout(RequestError):
    """The head did not arrive within ``server.header_timeout``, or the body stopped."""


class TooManyRequests(RequestError):
    """A caller past its budget of ``limits.*_per_minute``; ``Retry-After`` says when to come
    back."""


class TooManyConnections(RequestError):
    """This worker already holds ``server.max_connections`` connections."""


class Action(enum.Enum):
    """What an endpoint does, which the API's 500 message names."""

    TOKEN = "token"
    PRESIGN = "presign"
    DOWNLOAD = "download"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    message: str


INTERNAL_ERROR = Answer(500, "Internal server error")
_FAULT = {
    Action.PRESIGN: Answer(500, "Failed to generate download URL"),
    Action.DOWNLOAD: Answer(500, "Failed to download document"),
}

ANSWERS: dict[type[Exception], Answer | Mapping[Action, Answer]] = {
    Unauthorized: Answer(403, "UNAUTHORIZED"),
    BearerRefused: Answer(403, "UNAUTHORIZED"),
    DocumentIdRequired: Answer(435, "Document ID is required"),
    InvalidRequest: Answer(435, "Invalid request"),
    NoFilePath: Answer(435, "Document has no file path"),
    ArchiveTooLarge: Answer(435, "Archive too large"),
    DocumentNotFound: Answer(437, "Document not found"),
    PreconditionFailed: Answer(412, "Precondition failed"),
    RangeNotSatisfiable: Answer(416, "Requested range not satisfiable"),
    TooManyFailedLogins: Answer(429, "Too many failed login attempts"),
    RouteNotFound: Answer(404, "Route not found"),
    MethodNotAllowed: Answer(405, "Method not allowed"),
    MalformedRequest: Answer(400, "Malformed HTTP request"),
    BadHost: Answer(400, "Invalid Host header"),
    HeadTooLarge: Answer(431, "Request header fields too large"),
    TargetTooLong: Answer(414, "Request target too long"),
    RequestTimeout: Answer(408, "Request timeout"),
    TooManyConnections: Answer(503, "Too many connections"),
    TooManyRequests: Answer(429, "Too many requests"),
    StoreFailed: _FAULT,
    CatalogFailed: _FAULT,
    StateFailed: _FAULT,
}

#: The errors an endpoint answers itself; anything else is a defect (500, logged).
ANSWERED = tuple(ANSWERS)


def answer_for(exc: Exception, action: Action | None) -> Answer:
    """The table's answer to ``exc`` raised while doing ``action``."""
    for cls in type(exc).__mro__:
        entry = ANSWERS.get(cls)
        if isinstance(entry, Answer):
            return entry
        if entry is not None:
            return entry.get(action, INTERNAL_ERROR) if action is not None else INTERNAL_ERROR
    return INTERNAL_ERROR
