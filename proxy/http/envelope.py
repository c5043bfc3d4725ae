"""The one place that builds the ``{statusCode, data, message}`` envelope and maps errors to it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import DocproxyError, MethodNotAllowed, RouteNotFound

logger = logging.getLogger("docproxy")


def envelope(
    status_code: int,
    message: str,
    data: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = json.dumps(
        {"statusCode": status_code, "data": dict(data or {}), "message": message},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    return Response(body, status_code, headers=headers, media_type="application/json")


def ok(data: Mapping[str, Any]) -> Response:
    return envelope(200, "OKAY", data)


def error_response(exc: DocproxyError) -> Response:
    return envelope(exc.status_code, exc.message, headers=exc.headers)


async def handle_docproxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DocproxyError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route or method), in the same envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(headers=exc.headers))
    if exc.status_code == 404:
        return error_response(RouteNotFound())
    return envelope(exc.status_code, str(exc.detail))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope(500, "Internal server error")


EXCEPTION_HANDLERS = {
    DocproxyError: handle_docproxy_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
