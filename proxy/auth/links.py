"""The proxy's own presigned links: HMAC-SHA256 over the document id and the expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.config.settings import PresignConfig

LINK_PATH = "/links/"
_CANONICAL_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")


class LinkSigner:
    def __init__(self, config: PresignConfig) -> None:
        self.ttl = config.ttl
        self._key = config.signing_key.encode()

    def _signature(self, document_id: str, expires: int) -> str:
        message = f"docproxy-link\n{document_id}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, base_url: str, document_id: str, *, now: float | None = None) -> str:
        expires = int(now if now is not None else time.time()) + self.ttl
        query = urlencode({"expires": expires, "signature": self._signature(document_id, expires)})
        return f"{base_url.rstrip('/')}{LINK_PATH}{quote(document_id, safe='')}?{query}"

    def verify(
        self,
        document_id: str,
        expires: str | None,
        signature: str | None,
        *,
        now: float | None = None,
    ) -> None:
        """Raise Unauthorized unless the link is intact and not yet expired."""
        # Only the canonical decimal the signer wrote: int() would also take "0123" or
        # non-ASCII digits ("١٢٣"), so an altered link could verify against the same number.
        if not expires or not signature or not _CANONICAL_EXPIRES.fullmatch(expires):
            raise Unauthorized()
        expected = self._signature(document_id, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Unauthorized()
        if int(expires) <= (now if now is not None else time.time()):
            raise Unauthorized()
