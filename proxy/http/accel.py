"""The classic offload behind nginx: docproxy authorizes, nginx sends the bytes with sendfile.

An authorized GET for a document on the local backend is answered with the download headers,
``X-Accel-Redirect: {prefix}{escaped key}`` and no body; nginx follows it to an ``internal``
location aliased to the local root (see the README's "Behind nginx" section).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from starlette.responses import Response

from proxy.config.settings import Settings


class AccelRedirect:
    def __init__(self, prefix: str, backend_name: str) -> None:
        self.prefix = prefix
        self.backend_name = backend_name

    @classmethod
    def from_settings(cls, settings: Settings) -> AccelRedirect | None:
        config = settings.download.accel_redirect
        if not config.enabled:
            return None
        local = next(b.name for b in settings.storage.backends if b.local_root is not None)
        return cls(config.prefix, local)

    def serves(self, backend_name: str) -> bool:
        return backend_name == self.backend_name

    def uri(self, key: str) -> str:
        # Every byte outside the unreserved set is escaped ("?", "#", "%", spaces, non-ASCII),
        # so nginx reads the whole key as the path; keys never contain "..".
        return self.prefix + quote(key, safe="/")

    def response(self, key: str, headers: Mapping[str, str]) -> Response:
        """``headers`` are the download headers; Content-Length is nginx's to set."""
        kept = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        return Response(status_code=200, headers={**kept, "x-accel-redirect": self.uri(key)})
