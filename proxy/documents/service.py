"""From a document id to what can be sent: catalog, tenant rule, storage, headers.

Nothing here knows HTTP: faults and refusals are the domain errors of
``proxy.documents.errors``, which the HTTP layer answers in the API's words.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from backends.base import (
    FileSpan,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PresignRequest,
    StorageBackend,
    StorageError,
)
from backends.routing import StorageRouter
from proxy.auth.links import LinkSigner
from proxy.auth.tokens import Caller
from proxy.catalog.document import Document
from proxy.catalog.errors import CatalogError
from proxy.catalog.lookup import Catalog
from proxy.common.caches import BoundedCache
from proxy.config.settings import DownloadConfig
from proxy.documents.content_type import choose_type, declared_types, needs_sniff, sniff
from proxy.documents.disposition import ATTACHMENT, INLINE, attachment, content_disposition
from proxy.documents.errors import CatalogFailed, DocumentNotFound, NoFilePath, StoreFailed
from proxy.documents.stats import DownloadStats
from proxy.metrics import instruments

logger = logging.getLogger("docproxy")


@dataclass(frozen=True, slots=True)
class LocatedDocument:
    """A document this caller may have, and where its bytes would be (not yet checked)."""

    document: Document
    backend: StorageBackend
    key: str


@dataclass(frozen=True, slots=True)
class ResolvedDocument:
    """A document that exists, may be served to this caller, and whose object is in the store."""

    document: Document
    backend: StorageBackend
    key: str
    info: ObjectInfo
    filename: str
    content_type: str
    content_disposition: str


class DocumentService:
    def __init__(
        self,
        catalog: Catalog,
        router: StorageRouter,
        links: LinkSigner,
        download: DownloadConfig,
        stats: DownloadStats,
        presign_reuse_margin: int = 0,
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.links = links
        self.download = download
        self.stats = stats
        self.presigned = PresignedUrlCache(presign_reuse_margin)

    async def resolve_document(
        self, document_id: str, caller: Caller | None, disposition: str = ATTACHMENT
    ) -> ResolvedDocument:
        """Look the document up and check everything short of sending bytes.

        ``caller`` is None for the proxy's own signed links: the caller was checked when the
        link was made. ``disposition`` is what the client asked for (see ``inspect``).
        """
        located = await self.locate_document(document_id, caller)
        return await self.inspect(located, disposition)

    async def locate_document(self, document_id: str, caller: Caller | None) -> LocatedDocument:
        """Catalog, tenant rule and storage routing: everything that needs no store round trip."""
        document = await self._lookup(document_id)
        if document is None or document.deleted:
            raise DocumentNotFound()
        if caller is not None and not self._tenant_may_read(caller, document):
            # 437, not 403: another tenant must not learn that the id exists.
            logger.info(
                "document %r refused to client %r: group %r is not the token's %r",
                document_id,
                caller.client_id,
                document.group,
                caller.group_name,
            )
            raise DocumentNotFound()
        if not document.file_path:
            raise NoFilePath()
        try:
            backend, key = self.router.locate(document.file_path)
        except InvalidKey as exc:
            logger.warning("document %r has a refused file path: %s", document_id, exc)
            raise DocumentNotFound() from exc
        return LocatedDocument(document=document, backend=backend, key=key)

    async def inspect(
        self, located: LocatedDocument, disposition: str = ATTACHMENT
    ) -> ResolvedDocument:
        """Stat the object and settle the type, name and disposition it is served with: inline
        when asked for and the type is one of ``download.inline_types``, else attachment."""
        document, backend, key = located.document, located.backend, located.key
        document_id = document.id
        metered = instruments.active()
        started = time.perf_counter() if metered is not None else 0.0
        try:
            info = await backend.stat(key)
        except InvalidKey as exc:
            logger.warning("document %r has a refused file path: %s", document_id, exc)
            raise DocumentNotFound() from exc
        except ObjectNotFound as exc:
            logger.warning("document %r: object %s is missing from the store", document_id, exc)
            raise DocumentNotFound() from exc
        except StorageError as exc:
            logger.error("document %r: storage failed on stat: %s", document_id, exc)
            raise StoreFailed(str(exc)) from exc
        finally:
            if metered is not None:
                elapsed = time.perf_counter() - started
                metered.store_call(backend.name, "stat", elapsed)
        content_type = await self._content_type(document, backend, key, info)
        filename, header = attachment(
            document.name or posixpath.basename(document.file_path or ""), content_type
        )
        if disposition == INLINE and content_type in self.download.inline_types:
            header = content_disposition(filename, INLINE)
        return ResolvedDocument(
            document=document,
            backend=backend,
            key=key,
            info=info,
            filename=filename,
            content_type=content_type,
            content_disposition=header,
        )

    def _tenant_may_read(self, caller: Caller, document: Document) -> bool:
        if not self.catalog.tenant_rule or document.group is None:
            return True
        return caller.group_name == document.group

    async def _lookup(self, document_id: str) -> Document | None:
        metered = instruments.active()
        started = time.perf_counter() if metered is not None else 0.0
        try:
            return await self.catalog.get(document_id)
        except CatalogError as exc:
            logger.error("catalog lookup of %r failed: %s", document_id, exc)
            if metered is not None:
                metered.child(metered.catalog_failures).inc()
            raise CatalogFailed(str(exc)) from exc
        finally:
            if metered is not None:
                metered.catalog_timer.observe(time.perf_counter() - started)

    async def _content_type(
        self,
        document: Document,
        backend: StorageBackend,
        key: str,
        info: ObjectInfo,
    ) -> str:
        by_name, by_column = declared_types(document.name, document.file_path, document.type)
        sniffed = None
        if needs_sniff(by_name, by_column) and self.download.sniff_bytes and info.size:
            head = b""
            self.stats.sniff_reads += 1
            try:
                async for chunk in backend.stream_range(
                    key, 0, min(info.size, self.download.sniff_bytes), info.version
                ):
                    head += chunk
            except StorageError as exc:
                logger.error("document %r: storage failed on sniff: %s", document.id, exc)
                raise StoreFailed(str(exc)) from exc
            sniffed = sniff(head)
        return choose_type(by_name, by_column, sniffed)

    async def presigned_url(self, document_id: str, caller: Caller, proxy_base_url: str) -> str:
        return (await self.presign(document_id, caller, proxy_base_url))[0]

    async def presign(
        self,
        document_id: str,
        caller: Caller,
        proxy_base_url: str,
        *,
        expires_in: int | None = None,
        max_uses: int | None = None,
        disposition: str = ATTACHMENT,
    ) -> tuple[str, str]:
        """The store's own presigned URL, or the proxy's signed link when the store cannot sign,
        and the name of the backend holding the document. With ``expires_in`` or ``max_uses``,
        always the proxy's own link (see ``own_link``).

        A URL (or link) signed less than ``presign.reuse_margin`` seconds ago for the same
        catalog row is handed out again without asking the store anything (no stat, no
        signing): hot documents then cost one catalog look-up. The object is checked when a URL
        is made. Links name the proxy's base URL, so that is part of their key.
        """
        located = await self.locate_document(document_id, caller)
        if expires_in is not None or max_uses is not None:
            resolved = await self.inspect(located, disposition)
            return self.own_link(resolved, proxy_base_url, expires_in, max_uses)
        cache_key = (
            located.backend.name,
            located.key,
            located.document,
            proxy_base_url,
            disposition,
        )
        url = self.presigned.get(cache_key)
        if url is not None:
            _count_presigned(located.backend.name)
            return url, located.backend.name
        resolved = await self.inspect(located, disposition)
        request = PresignRequest(
            key=resolved.key,
            expires_in=self.links.ttl,
            filename=resolved.filename,
            content_disposition=resolved.content_disposition,
            content_type=resolved.content_type,
        )
        metered = instruments.active()
        started = time.perf_counter() if metered is not None else 0.0
        try:
            url = await resolved.backend.presign(request)
        except StorageError as exc:
            logger.error("presign of %r failed: %s", document_id, exc)
            raise StoreFailed(str(exc)) from exc
        finally:
            if metered is not None:
                elapsed = time.perf_counter() - started
                metered.store_call(located.backend.name, "presign", elapsed)
        if url is None:
            url = self.links.document_link(proxy_base_url, document_id, _link_params(resolved))
        self.presigned.put(cache_key, url)
        _count_presigned(located.backend.name)
        return url, located.backend.name

    def own_link(
        self,
        resolved: ResolvedDocument,
        proxy_base_url: str,
        expires_in: int | None,
        max_uses: int | None,
    ) -> tuple[str, str]:
        """docproxy's own link, whatever the store, with its own expiry and number of uses;
        never reused: each makes a link with a count of its own."""
        url = self.links.document_link(
            proxy_base_url,
            resolved.document.id,
            _link_params(resolved),
            expires_in=expires_in,
            max_uses=max_uses,
        )
        return url, resolved.backend.name

    def stream(self, resolved: ResolvedDocument, start: int, end: int) -> CountedRead:
        """Bytes ``[start, end)`` of the object: a ranged read, begun (and counted) only when
        the first chunk is asked for, so a response that never iterates never touches the store."""
        return CountedRead(self.stats, resolved, start, end)


def _count_presigned(backend: str) -> None:
    if (metered := instruments.active()) is not None:
        metered.presigned_url(backend)


def _link_params(resolved: ResolvedDocument) -> dict[str, str]:
    """An inline document's link says so (signed with the rest); attachment is the default."""
    if resolved.content_disposition.startswith(INLINE):
        return {"disposition": INLINE}
    return {}


class CountedRead:
    """A store's ranged read, started on the first ``__anext__`` and counted in the stats; a
    store's fault comes out of it as ``StoreFailed``.

    A plain class rather than an async generator wrapping the store's, which would add the
    event loop's async-generator hooks, an ``aclosing`` and a frame per chunk.
    """

    __slots__ = ("_chunks", "_end", "_reads", "_resolved", "_start")

    def __init__(
        self, reads: DownloadStats, resolved: ResolvedDocument, start: int, end: int
    ) -> None:
        self._reads = reads
        self._resolved = resolved
        self._start = start
        self._end = end
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> CountedRead:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        if chunks is None:
            self._reads.object_reads += 1
            resolved = self._resolved
            if (self._start, self._end) != (0, resolved.info.size):
                self._reads.ranged_reads += 1
            # Pinned to the version stat saw: a rewrite midway aborts, never splices.
            chunks = resolved.backend.stream_range(
                resolved.key, self._start, self._end, resolved.info.version
            )
            self._chunks = chunks
            if (metered := instruments.active()) is not None:
                return await self._first_timed(chunks, metered)
        try:
            chunk = await anext(chunks)
        except StorageError as exc:
            raise StoreFailed(str(exc)) from exc
        self._reads.bytes_read += len(chunk)
        return chunk

    async def _first_timed(
        self, chunks: AsyncIterator[bytes], metered: instruments.Instruments
    ) -> bytes:
        """The first chunk, its wait counted as the store's ``read`` latency."""
        started = time.perf_counter()
        try:
            chunk = await anext(chunks)
        except StorageError as exc:
            raise StoreFailed(str(exc)) from exc
        finally:
            elapsed = time.perf_counter() - started
            backend = self._resolved.backend.name
            metered.store_call(backend, "read", elapsed)
        self._reads.bytes_read += len(chunk)
        return chunk

    async def open_file(self) -> OpenFile | None:
        """The span as an open local file, for a send that never reads it into Python
        (counted like a read); None when the store has no files of its own. Instead of
        iterating, never both."""
        resolved = self._resolved
        open_span = getattr(resolved.backend, "open_span", None)
        if open_span is None:
            return None
        try:
            span: FileSpan = await open_span(
                resolved.key, self._start, self._end, resolved.info.version
            )
        except StorageError as exc:
            raise StoreFailed(str(exc)) from exc
        self._reads.object_reads += 1
        if (self._start, self._end) != (0, resolved.info.size):
            self._reads.ranged_reads += 1
        return OpenFile(span, self._reads)

    async def aclose(self) -> None:
        """Close the store's read (its ``finally`` runs now, not when it is collected)."""
        chunks = self._chunks
        if chunks is not None:
            await chunks.aclose()  # type: ignore[attr-defined]


class OpenFile:
    """A store's span as an open local file (``fd``, ``start``, ``end``), for the HTTP layer
    to send with ``sendfile``; its faults come out as ``StoreFailed``. ``check`` after each
    piece sent is what pins the bytes to the version ``stat`` saw; ``chunks`` reads the rest
    through Python, pinned like any read."""

    __slots__ = ("_reads", "_span", "end", "fd", "start")

    def __init__(self, span: FileSpan, reads: DownloadStats) -> None:
        self._span = span
        self._reads = reads
        self.fd = span.fd
        self.start = span.start
        self.end = span.end

    def check(self) -> None:
        try:
            self._span.check()
        except StorageError as exc:
            raise StoreFailed(str(exc)) from exc

    async def chunks(self, offset: int, size: int) -> AsyncIterator[bytes]:
        """Bytes ``[offset, end)`` in chunks of ``size``, each read, checked and counted before
        it is handed on."""
        reads = self._span.chunks(offset, size)
        try:
            while True:
                try:
                    chunk = await anext(reads)
                except StopAsyncIteration:
                    return
                except StorageError as exc:
                    raise StoreFailed(str(exc)) from exc
                self._reads.bytes_read += len(chunk)
                yield chunk
        finally:
            await reads.aclose()  # type: ignore[attr-defined]

    def count_sent(self, size: int) -> None:
        """``size`` bytes of the span left without a read through Python: counted as read."""
        self._reads.bytes_read += size

    def close(self) -> None:
        self._span.close()


class PresignedUrlCache:
    """Presigned URLs and links still fresh enough to hand out again, for any backend.

    Signing costs a store's SDK hundreds of microseconds, and clients ask for the same hot
    documents over and over. A URL is reused only while its age
    is at most ``margin`` seconds, so every URL returned keeps at least ttl - margin seconds
    of validity. The key holds the catalog row the URL was made from, so any change to it
    (name, type, path, group, deletion) makes a new URL.
    """

    MAX_ENTRIES = 4096

    def __init__(self, margin: int) -> None:
        self.margin = margin
        self._entries: BoundedCache[tuple[object, ...], tuple[str, float]] = BoundedCache(
            self.MAX_ENTRIES
        )

    def get(self, key: tuple[object, ...]) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        url, signed_at = entry
        if time.monotonic() - signed_at > self.margin:
            del self._entries[key]
            return None
        return url

    def put(self, key: tuple[object, ...], url: str) -> None:
        if self.margin > 0:
            self._entries.put(key, (url, time.monotonic()))
