"""The one place that builds the ``{statusCode, data, message}`` envelope, for answers and for
errors (each error's status and message come from the table in ``proxy.http.errors``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from proxy.documents.errors import ArchiveTooLarge, DocumentError
from proxy.http.errors import (
    INTERNAL_ERROR,
    Action,
    MethodNotAllowed,
    RequestError,
    RouteNotFound,
    answer_for,
)

logger = logging.getLogger("docproxy")


def envelope_body(status_code: int, message: str, data: Mapping[str, Any] | None = None) -> bytes:
    return json.dumps(
        {"statusCode": status_code, "data": dict(data or {}), "message": message},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def envelope(
    status_code: int,
    message: str,
    data: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = envelope_body(status_code, message, data)
    return Response(body, status_code, headers=headers, media_type="application/json")


def ok(data: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> Response:
    return envelope(200, "OKAY", data, headers=headers)


def error_response(exc: Exception, action: Action | None = None) -> Response:
    """The envelope the table (``proxy.http.errors.ANSWERS``) gives ``exc`` for ``action``."""
    answer = answer_for(exc, action)
    if isinstance(exc, RequestError):
        return envelope(answer.status, exc.message or answer.message, headers=exc.headers)
    # An archive's refusal names the document at fault; a single download's data stays empty.
    document_id = exc.document_id if isinstance(exc, DocumentError) else None
    data = {"document_id": document_id} if document_id is not None else None
    message = str(exc) if isinstance(exc, ArchiveTooLarge) else answer.message
    return envelope(answer.status, message, data)


def request_error_body(exc: RequestError) -> tuple[int, bytes]:
    """The status and envelope bytes of ``exc``, for the server's answers written before any
    endpoint runs (a request head refused, a timeout, a full worker)."""
    answer = answer_for(exc, None)
    return answer.status, envelope_body(answer.status, exc.message or answer.message)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route or method), in the same envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(headers=exc.headers))
    if exc.status_code == 404:
        return error_response(RouteNotFound())
    return envelope(exc.status_code, str(exc.detail))


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client left (or was timed out) while its body was being read: nobody is there to
    answer and it is no fault of docproxy's, so no ERROR and no traceback; the server has
    logged a timeout already, so this line is DEBUG."""
    logger.debug("%s %s: the client left before sending its whole body", request.method,
                request.url.path)  # fmt: skip
    return Response(status_code=400)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope(INTERNAL_ERROR.status, INTERNAL_ERROR.message)


# Endpoints answer the table's errors themselves (``proxy.http.routes.Handler``); these are
# the router's 404/405, a client gone mid-body, and the defects.
EXCEPTION_HANDLERS = {
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}
