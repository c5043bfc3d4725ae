"""Calls from web pages of other origins (CORS), through Starlette's ``CORSMiddleware``."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from proxy.config.settings import CorsConfig
from proxy.http.envelope import envelope

# What a page's script may read of a download: the name the file is saved as, and which bytes
# of how many it holds (Content-Length is safelisted by browsers already; named for older ones),
# and the request id a support ticket can quote.
EXPOSED_HEADERS = ("Content-Disposition", "Content-Length", "Content-Range", "X-Request-ID")


class EnvelopedCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered like any bad input: 400 in the API's
    envelope, its message naming what was refused ("Disallowed CORS origin, headers")."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        return envelope(400, bytes(response.body).decode(), headers=headers)


def cors_middleware(config: CorsConfig) -> list[Middleware]:
    """The CORS layer when origins are listed; none at all otherwise (no cost per request)."""
    if not config.allow_origins:
        return []
    return [
        Middleware(
            EnvelopedCORS,
            allow_origins=list(config.allow_origins),
            allow_methods=list(config.allow_methods),
            allow_headers=list(config.allow_headers),
            expose_headers=list(EXPOSED_HEADERS),
            max_age=config.max_age,
        )
    ]
