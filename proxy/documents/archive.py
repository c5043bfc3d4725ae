"""Many documents as one ZIP: each checked as its single download is, named as it would be.

``POST /download/zip`` gets a signed link for an exact list of documents; its ``GET`` checks
every document again (one deleted since then refuses the archive) and streams them.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from proxy.auth.archive_links import ArchiveGrant, ArchiveLinkSigner
from proxy.auth.tokens import Caller
from proxy.config.settings import ZipConfig
from proxy.documents.errors import ArchiveTooLarge, DocumentError
from proxy.documents.service import DocumentService, ResolvedDocument

if TYPE_CHECKING:
    from proxy.documents.zipping import Entry

# Browsers, proxies and servers cut URLs somewhere past 64 KiB; a longer link would be handed
# out only to fail when followed.
MAX_LINK_CHARS = 60_000
# Documents looked up (catalog and store) at once for one archive.
RESOLVE_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Archive:
    entries: tuple[Entry, ...]
    length: int | None  # the exact byte count when entries are stored, None when deflated


def unique_names(names: Iterable[str]) -> list[str]:
    """``a.pdf``, ``a (2).pdf``, ...: unique without regard to case, which Windows and macOS
    file systems ignore when the archive is unpacked."""
    seen: set[str] = set()
    unique = []
    for name in names:
        stem, ext = posixpath.splitext(name)
        candidate, number = name, 2
        while candidate.casefold() in seen:
            candidate, number = f"{stem} ({number}){ext}", number + 1
        seen.add(candidate.casefold())
        unique.append(candidate)
    return unique


class ArchiveService:
    def __init__(
        self,
        documents: DocumentService,
        links: ArchiveLinkSigner,
        config: ZipConfig,
        max_target_bytes: int,
    ) -> None:
        self.documents = documents
        self.links = links
        self.config = config
        # The server refuses longer request targets (414): a link must fit under its limit.
        self.max_target_bytes = max_target_bytes

    async def link(
        self, document_ids: Sequence[str], filename: str, caller: Caller, base_url: str
    ) -> str:
        """A signed link to the archive of ``document_ids``, each checked as a download."""
        self._check_count(document_ids)
        self._check_bytes(await self._resolve_all(document_ids, caller))
        grant = ArchiveGrant(caller.client_id, caller.group_name, tuple(document_ids))
        url = self.links.sign(base_url, filename, grant)
        self._check_link(url, len(url) - len(base_url.rstrip("/")))
        return url

    async def open(self, grant: ArchiveGrant) -> Archive:
        """Check the link's documents again, as the caller who asked for it, and lay them out."""
        caller = Caller(
            client_id=grant.client_id,
            email=None,
            group_name=grant.group_name,
            fingerprint=None,
            token_id="",
        )
        # zipstream-ng and isal are imported by the first archive, not by every start.
        from proxy.documents.zipping import Entry, archive_length

        resolved = await self._resolve_all(grant.document_ids, caller)
        self._check_bytes(resolved)
        names = unique_names(r.filename for r in resolved)
        entries = tuple(
            Entry(name, r.info.size, r.info.modified, self._reader(r))
            for name, r in zip(names, resolved, strict=True)
        )
        length = None if self.config.compress else archive_length(entries)
        return Archive(entries, length)

    def chunks(self, archive: Archive) -> AsyncIterator[bytes]:
        from proxy.documents.zipping import archive_chunks

        return archive_chunks(archive.entries, compress=self.config.compress)

    def _reader(self, resolved: ResolvedDocument) -> Callable[[], AsyncIterator[bytes]]:
        return lambda: self.documents.stream(resolved, 0, resolved.info.size)

    def _check_count(self, document_ids: Sequence[str]) -> None:
        limit = self.config.max_documents
        if len(document_ids) > limit:
            raise ArchiveTooLarge(
                f"Too many documents: {len(document_ids)}, more than zip.max_documents ({limit})"
            )

    def _check_link(self, url: str, target: int) -> None:
        if len(url) > MAX_LINK_CHARS:
            raise ArchiveTooLarge(
                f"Archive link would be {len(url)} characters long, more than "
                f"{MAX_LINK_CHARS}: ask for fewer documents"
            )
        if target > self.max_target_bytes:
            raise ArchiveTooLarge(
                f"Archive link would be {target} bytes past the host, more than "
                f"server.max_target_bytes ({self.max_target_bytes}): ask for fewer documents"
            )

    def _check_bytes(self, resolved: Sequence[ResolvedDocument]) -> None:
        total, limit = sum(r.info.size for r in resolved), self.config.max_bytes
        if total > limit:
            raise ArchiveTooLarge(
                f"Archive too large: the documents total {total} bytes, more than "
                f"zip.max_bytes ({limit})"
            )

    async def _resolve_all(
        self, document_ids: Sequence[str], caller: Caller
    ) -> list[ResolvedDocument]:
        """Every document resolved, a few at a time; the first refused in list order refuses
        them all, naming itself."""
        results: list[ResolvedDocument | DocumentError | None] = [None] * len(document_ids)
        indexes = iter(range(len(document_ids)))

        async def worker() -> None:
            for index in indexes:
                try:
                    results[index] = await self.documents.resolve_document(
                        document_ids[index], caller
                    )
                except DocumentError as exc:
                    results[index] = exc

        async with anyio.create_task_group() as group:
            for _ in range(min(RESOLVE_CONCURRENCY, len(document_ids))):
                group.start_soon(worker)
        resolved = []
        for document_id, result in zip(document_ids, results, strict=True):
            if isinstance(result, DocumentError):
                result.document_id = document_id
                raise result
            assert result is not None
            resolved.append(result)
        return resolved
