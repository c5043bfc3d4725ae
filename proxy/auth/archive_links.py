"""The proxy's signed links to an archive of many documents: stateless, so any replica serves
them. The link carries who asked (client and tenant group) and the exact list of ids,
deflated and base64url-encoded, signed by ``proxy.auth.links.LinkSigner``."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from proxy.auth.errors import Unauthorized
from proxy.auth.links import LinkSigner, single_valued

ARCHIVE_PATH = "/archives/"
ARCHIVE = "archive"  # the purpose archive links are signed for
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
    """Archive links through the one link signer (purpose ``archive``), so they rotate with
    ``presign.signing_keys`` like every other link."""

    def __init__(self, links: LinkSigner) -> None:
        self.links = links
        self.ttl = links.ttl

    def sign(
        self, base_url: str, filename: str, grant: ArchiveGrant, *, now: float | None = None
    ) -> str:
        fields = self.links.sign(ARCHIVE, {"name": filename, "ids": _pack(grant)}, now=now)
        del fields["name"]  # it travels in the path
        query = urlencode(fields)
        return f"{base_url.rstrip('/')}{ARCHIVE_PATH}{quote(filename, safe='')}?{query}"

    def verify(
        self, filename: str, query: Iterable[tuple[str, str]], *, now: float | None = None
    ) -> ArchiveGrant:
        """The grant of an intact, unexpired link; Unauthorized for anything else."""
        fields = single_valued(query)
        if "name" in fields:
            raise Unauthorized()
        params = self.links.verify(ARCHIVE, {**fields, "name": filename}, now=now)
        if set(params) != {"name", "ids"}:
            raise Unauthorized()
        return _unpack(params["ids"])
