"""The proxy's own presigned links: HMAC-SHA256 over the document id and the expiry; a
limited link (``max_downloads``) also over its own id and its number of uses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.config.settings import PresignConfig

LINK_PATH = "/links/"
_CANONICAL_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_CANONICAL_USES = re.compile(r"[1-9][0-9]{0,9}")
_LINK_ID = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True, slots=True)
class LimitedLink:
    """What a verified limited link allows: ``max_uses`` downloads until ``expires``."""

    link_id: str
    max_uses: int
    expires: int


class LinkSigner:
    def __init__(self, config: PresignConfig) -> None:
        self.ttl = config.ttl
        self._key = config.signing_key.encode()

    def _signature(self, document_id: str, expires: int, limit: LimitedLink | None = None) -> str:
        if limit is None:
            message = f"docproxy-link\n{document_id}\n{expires}"
        else:  # another first line, so that no plain link's message can equal a limited one's
            message = f"docproxy-limited-link\n{limit.link_id}\n{limit.max_uses}\n{expires}\n"
            message += document_id
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self,
        base_url: str,
        document_id: str,
        *,
        now: float | None = None,
        expires_in: int | None = None,
        max_uses: int | None = None,
    ) -> str:
        """A link valid ``expires_in`` seconds (default ``presign.ttl``); with ``max_uses``, a
        limited link with an id of its own, whose uses the caller of ``verify`` counts."""
        expires = int(now if now is not None else time.time()) + (expires_in or self.ttl)
        limit = None
        fields: dict[str, object] = {"expires": expires}
        if max_uses is not None:
            limit = LimitedLink(secrets.token_urlsafe(16), max_uses, expires)
            fields.update(uses=max_uses, link=limit.link_id)
        fields["signature"] = self._signature(document_id, expires, limit)
        query = urlencode(fields)
        return f"{base_url.rstrip('/')}{LINK_PATH}{quote(document_id, safe='')}?{query}"

    def verify(
        self,
        document_id: str,
        expires: str | None,
        signature: str | None,
        *,
        now: float | None = None,
        uses: str | None = None,
        link_id: str | None = None,
    ) -> LimitedLink | None:
        """Raise Unauthorized unless the link is intact and not yet expired; a limited link's
        limit (its uses are not counted here), else None."""
        # Only the canonical decimal the signer wrote: int() would also take "0123" or
        # non-ASCII digits ("١٢٣"), so an altered link could verify against the same number.
        if not expires or not signature or not _CANONICAL_EXPIRES.fullmatch(expires):
            raise Unauthorized()
        limit = None
        if uses is not None or link_id is not None:
            if not uses or not _CANONICAL_USES.fullmatch(uses):
                raise Unauthorized()
            if not link_id or not _LINK_ID.fullmatch(link_id):
                raise Unauthorized()
            limit = LimitedLink(link_id, int(uses), int(expires))
        expected = self._signature(document_id, int(expires), limit)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Unauthorized()
        if int(expires) <= (now if now is not None else time.time()):
            raise Unauthorized()
        return limit
