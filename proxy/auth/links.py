"""docproxy's own signed links: HMAC-SHA256 over a purpose and a set of parameters.

One signer serves every kind of link (a document's download, an archive, a limited link): the
caller names the purpose and the parameters the link carries, the signer adds ``expires``,
``kid`` (the id of the key that signed) and ``signature``. Verifying takes every parameter the
link arrived with (path and query), so nothing can be added, dropped or changed.

A limited link (``max_downloads``) is a document's link with two more parameters: ``link``, an
id of its own, and ``uses``, how many downloads it allows; the caller counts them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.config.settings import PresignConfig

LINK_PATH = "/links/"
DOWNLOAD = "download"  # the purpose of a document's link
# What the signer adds; a caller's parameters may not use these names.
SIGNED_FIELDS = ("expires", "kid", "signature")
_CANONICAL_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_CANONICAL_USES = re.compile(r"[1-9][0-9]{0,9}")
LIMIT_FIELDS = ("link", "uses")


@dataclass(frozen=True, slots=True)
class LimitedLink:
    """What a verified limited link allows: ``max_uses`` downloads until ``expires``."""

    link_id: str
    max_uses: int
    expires: int


@dataclass(frozen=True, slots=True)
class DocumentLink:
    """A verified link to a document: its other parameters, and its limit if it has one."""

    params: dict[str, str]
    limit: LimitedLink | None = None


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
        expires_in: int | None = None,
        max_uses: int | None = None,
    ) -> str:
        """``{base}/links/{id}?...&expires=...&kid=...&signature=...``, valid ``expires_in``
        seconds (default ``presign.ttl``); with ``max_uses``, a limited link with an id of its
        own, whose uses the caller of ``verify_document_link`` counts."""
        fields = {"id": document_id, **(params or {})}
        if max_uses is not None:
            fields.update(uses=str(max_uses), link=secrets.token_urlsafe(16))
        fields = self.sign(DOWNLOAD, fields, ttl=expires_in, now=now)
        del fields["id"]  # it travels in the path
        return f"{base_url.rstrip('/')}{LINK_PATH}{quote(document_id, safe='')}?{urlencode(fields)}"

    def verify_document_link(
        self, document_id: str, query: Iterable[tuple[str, str]], *, now: float | None = None
    ) -> DocumentLink:
        """The link's parameters besides the id (such as ``disposition``), once verified."""
        fields = single_valued(query)
        if "id" in fields:
            raise Unauthorized()
        params = self.verify(DOWNLOAD, {**fields, "id": document_id}, now=now)
        del params["id"]
        if not any(name in params for name in LIMIT_FIELDS):
            return DocumentLink(params)
        link_id, uses = params.pop("link", ""), params.pop("uses", "")
        if not link_id or not _CANONICAL_USES.fullmatch(uses):
            raise Unauthorized()
        return DocumentLink(params, LimitedLink(link_id, int(uses), int(fields["expires"])))


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
