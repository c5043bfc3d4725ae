"""The proxy's signed links to an archive of many documents: stateless, so any replica serves
them. The link carries who asked (client and tenant group) and the exact list of ids,
deflated and base64url-encoded, under an HMAC-SHA256 with the presign key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import zlib
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.config.settings import PresignConfig

ARCHIVE_PATH = "/archives/"
_CANONICAL_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
# A signed list never inflates past this: far above what zip.max_documents ids take, and a
# bound on what even a valid link can make the server allocate.
_MAX_INFLATED = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ArchiveGrant:
    """What a verified archive link allows: these documents, read as this client and group."""

    client_id: str
    group_name: str | None
    document_ids: tuple[str, ...]


def _pack(grant: ArchiveGrant) -> str:
    text = json.dumps(
        [grant.client_id, grant.group_name, list(grant.document_ids)],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).rstrip(b"=").decode()


def _unpack(packed: str) -> ArchiveGrant:
    """Only ever called on a packed list whose signature checked out."""
    raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
    inflater = zlib.decompressobj()
    text = inflater.decompress(raw, _MAX_INFLATED)
    client_id, group_name, document_ids = json.loads(text)
    return ArchiveGrant(client_id, group_name, tuple(document_ids))


class ArchiveLinkSigner:
    def __init__(self, config: PresignConfig) -> None:
        self.ttl = config.ttl
        self._key = config.signing_key.encode()

    def _signature(self, filename: str, packed: str, expires: int) -> str:
        message = f"docproxy-archive\n{filename}\n{packed}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self, base_url: str, filename: str, grant: ArchiveGrant, *, now: float | None = None
    ) -> str:
        expires = int(now if now is not None else time.time()) + self.ttl
        packed = _pack(grant)
        query = urlencode(
            {
                "ids": packed,
                "expires": expires,
                "signature": self._signature(filename, packed, expires),
            }
        )
        return f"{base_url.rstrip('/')}{ARCHIVE_PATH}{quote(filename, safe='')}?{query}"

    def verify(
        self,
        filename: str,
        packed: str | None,
        expires: str | None,
        signature: str | None,
        *,
        now: float | None = None,
    ) -> ArchiveGrant:
        """The grant of an intact, unexpired link; Unauthorized for anything else."""
        if not packed or not expires or not signature or not _CANONICAL_EXPIRES.fullmatch(expires):
            raise Unauthorized()
        expected = self._signature(filename, packed, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Unauthorized()
        if int(expires) <= (now if now is not None else time.time()):
            raise Unauthorized()
        return _unpack(packed)
