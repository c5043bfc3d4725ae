"""Reason phrases for the Download Document API's own status codes (435, 437).

uvicorn writes the status line from tables built once from ``http.HTTPStatus``, which knows
neither code, so their lines would end in an empty phrase. ``use_reason_phrases`` adds ours to
both of uvicorn's tables (httptools and h11), which its protocols consult per response.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

REASON_PHRASES: Mapping[int, str] = {
    435: "Invalid Request",
    437: "Document Not Found",
}


def use_reason_phrases(phrases: Mapping[int, str] = REASON_PHRASES) -> None:
    """Make uvicorn's status lines carry ``phrases`` (in this process; idempotent)."""
    # uvicorn imports the protocol it serves with before it builds the app, so h11's table
    # needs patching only when h11 is loaded already: importing it otherwise costs `docproxy
    # serve` (always httptools) memory for nothing.
    h11_impl = sys.modules.get("uvicorn.protocols.http.h11_impl")
    for status, phrase in phrases.items() if h11_impl is not None else ():
        h11_impl.STATUS_PHRASES[status] = phrase.encode()
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools not installed: uvicorn serves with h11 only
        return
    for status, phrase in phrases.items():
        httptools_impl.STATUS_LINE[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
