"""docproxy's own signed links: HMAC-SHA256 over a purpose and a set of parameters.

One signer serves every kind of link (a document's download, an archive, a limited link): the
caller names the purpose and the parameters the link carries, the signer adds ``expires``,
``kid`` (the id of the key that signed) and ``signature``. Verifying takes every parameter the
link arrived with (path and query), so nothing can be added, dropped or changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.config.settings import PresignConfig

LINK_PATH = "/links/"
DOWNLOAD = "download"  # the purpose of a document's link
# What the signer adds; a caller's parameters may not use these names.
SIGNED_FIELDS = ("expires", "kid", "signature")
_CANONICAL_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")


class LinkSigner:
    """Signs with the first of ``presign.signing_keys``, verifies with any of them."""

    def __init__(self, config: PresignConfig) -> None:
        self.ttl = config.ttl
        self._keys = {k.id: k.key.encode() for k in config.signing_keys}
        self._signing_id = config.signing_keys[0].id

    def sign(
        self,
        purpose: str,
        params: Mapping[str, str],
        *,
        ttl: int | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """``params`` plus ``expires`` (now + ttl, default ``presign.ttl``), ``kid`` and
        ``signature``."""
        if any(name in params for name in SIGNED_FIELDS):
            raise ValueError(f"link parameters may not be named {', '.join(SIGNED_FIELDS)}")
        issued = int(now if now is not None else time.time())
        fields = {
            **params,
            "expires": str(issued + (self.ttl if ttl is None else ttl)),
            "kid": self._signing_id,
        }
        fields["signature"] = _mac(self._keys[self._signing_id], purpose, fields)
        return fields

    def verify(
        self, purpose: str, fields: Mapping[str, str], *, now: float | None = None
    ) -> dict[str, str]:
        """The link's own parameters (without expires, kid and signature); Unauthorized unless
        it is intact, signed by a configured key and not yet expired."""
        expires, key_id, signature = (fields.get(name) for name in SIGNED_FIELDS)
        # Only the canonical decimal the signer wrote: int() would also take "0123" or
        # non-ASCII digits ("١٢٣"), so an altered link could verify against the same number.
        if not expires or not signature or not _CANONICAL_EXPIRES.fullmatch(expires):
            raise Unauthorized()
        key = self._keys.get(key_id or "")
        if key is None:
            raise Unauthorized()
        signed = {name: value for name, value in fields.items() if name != "signature"}
        if not hmac.compare_digest(_mac(key, purpose, signed).encode(), signature.encode()):
            raise Unauthorized()
        if int(expires) <= (now if now is not None else time.time()):
            raise Unauthorized()
        return {name: value for name, value in signed.items() if name not in SIGNED_FIELDS}

    def document_link(
        self,
        base_url: str,
        document_id: str,
        params: Mapping[str, str] | None = None,
        *,
        now: float | None = None,
    ) -> str:
        """``{base}/links/{id}?...&expires=...&kid=...&signature=...``"""
        fields = self.sign(DOWNLOAD, {"id": document_id, **(params or {})}, now=now)
        del fields["id"]  # it travels in the path
        return f"{base_url.rstrip('/')}{LINK_PATH}{quote(document_id, safe='')}?{urlencode(fields)}"

    def verify_document_link(
        self, document_id: str, query: Iterable[tuple[str, str]], *, now: float | None = None
    ) -> dict[str, str]:
        """The link's parameters besides the id (such as ``disposition``), once verified."""
        fields = single_valued(query)
        if "id" in fields:
            raise Unauthorized()
        params = self.verify(DOWNLOAD, {**fields, "id": document_id}, now=now)
        del params["id"]
        return params


def single_valued(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A query as a mapping; a name given twice is refused (which one was signed?)."""
    fields: dict[str, str] = {}
    for name, value in items:
        if name in fields:
            raise Unauthorized()
        fields[name] = value
    return fields


def _mac(key: bytes, purpose: str, fields: Mapping[str, str]) -> str:
    # JSON of [purpose, sorted pairs] is one unambiguous byte string for any names and values.
    message = json.dumps([purpose, sorted(fields.items())], separators=(",", ":"))
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
