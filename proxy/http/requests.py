"""Reading requests into typed values: the Bearer token, JSON bodies and their fields, with
the 435 messages the Download Document API defines."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from proxy.common.filenames import clean_filename
from proxy.documents.disposition import ATTACHMENT, DISPOSITIONS
from proxy.http.errors import BearerRefused, DocumentIdRequired, InvalidRequest

MAX_BODY_BYTES = 64 * 1024


async def json_object(request: Request, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any] | None:
    """The body as a JSON object; None for an empty body. Raises 435 for anything else."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise InvalidRequest(f"Request body is larger than {max_bytes} bytes")
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("Malformed JSON body") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return value


def document_id_from(value: object) -> str:
    """A usable document id, or the API's 435 (missing, empty, blank or not a string)."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise DocumentIdRequired()
    return value


def required_string(body: dict[str, Any], key: str, path: str | None = None) -> str:
    value = body.get(key)
    name = path or key
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRequest(f"{name} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return _unicode(value, name)


def optional_string(body: dict[str, Any], key: str, path: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{path or key} must be a string")
    return _unicode(value, path or key)


def _unicode(value: str, name: str) -> str:
    """``value`` if it is valid Unicode. JSON's ``"\\ud800"`` escapes decode to lone
    surrogates, which no encoder accepts: refused here rather than failing later as a 500."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"{name} must be valid Unicode") from exc
    return value


# The challenges of a 403 on the Bearer endpoints (RFC 6750, section 3).
NO_TOKEN = {"www-authenticate": "Bearer"}
INVALID_TOKEN = {"www-authenticate": 'Bearer error="invalid_token"'}


def disposition_from(value: object) -> str:
    """``disposition`` of a download or presign request: attachment unless it says inline."""
    if value is None:
        return ATTACHMENT
    if value not in DISPOSITIONS:
        raise InvalidRequest(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    return str(value)


def bearer_token(authorization: str | None) -> str:
    """The token in ``Authorization: Bearer <token>``; BearerRefused if absent or malformed."""
    if not authorization:
        raise BearerRefused(headers=NO_TOKEN)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise BearerRefused(headers=NO_TOKEN)  # no Bearer token was presented
    if " " in token:
        raise BearerRefused(headers=INVALID_TOKEN)
    return token


def document_ids_from(value: object) -> list[str]:
    """A non-empty list of usable document ids, or the API's 435."""
    if value is None or value == []:
        raise InvalidRequest("document_ids is required")
    if not isinstance(value, list):
        raise InvalidRequest("document_ids must be a list of document ids")
    return [document_id_from(item) for item in value]


def archive_filename(value: object) -> str:
    """The name an archive is saved as: cleaned like any download's, ending in ``.zip``."""
    if value is None:
        return "documents.zip"
    if not isinstance(value, str):
        raise InvalidRequest("filename must be a string")
    name = clean_filename(value)
    return name if name.lower().endswith(".zip") else f"{name}.zip"


def optional_integer(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    """An integer from ``low`` to ``high`` (not a bool, not 5.0), None when absent; else 435
    naming the field and the range."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{key} must be an integer from {low} to {high}")
    return value
