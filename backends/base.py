"""The storage protocol: what docproxy needs from a store, and nothing of HTTP.

A backend answers three questions about an object addressed by a key relative to
the backend: how big is it (``stat``), what are the bytes in ``[start, end)``
(``stream_range``), and where can a client fetch it directly (``presign``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from proxy.config.section import Section


class StorageError(Exception):
    """The store failed (unreachable, credentials refused, I/O error)."""


class ObjectNotFound(StorageError):
    """The key names no object in the store."""


class ObjectChanged(StorageError):
    """The object is no longer the version its read was pinned to (rewritten meanwhile)."""


class InvalidKey(StorageError):
    """The key could escape the backend's root or is otherwise unusable."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str | None = None
    modified: float | None = None  # seconds since the epoch
    # What pins a read to these bytes (local: size, mtime and inode; a store: its ETag or
    # generation), handed back to ``stream_range``; None: the backend cannot pin reads.
    version: Hashable | None = None


@dataclass(frozen=True, slots=True)
class PresignRequest:
    key: str
    expires_in: int  # seconds
    filename: str  # the name the client should save the file as
    content_disposition: str  # the full header value to force on the response
    content_type: str


class FileSpan(Protocol):
    """Bytes ``[start, end)`` of an open local file, pinned to the version ``stat`` saw, for a
    caller that sends them itself (``sendfile``) instead of reading them through Python.
    ``LocalBackend.open_span`` makes one; the caller must ``close`` it."""

    fd: int
    start: int
    end: int

    def check(self) -> None:
        """Raise ``ObjectChanged`` when the file is no longer the pinned version, or
        ``StorageError`` when it now ends before ``end``."""

    def chunks(self, offset: int, size: int) -> AsyncIterator[bytes]:
        """Bytes ``[offset, end)`` read in chunks of ``size``, each checked against the pin
        after its read; ``StorageError`` (``ObjectChanged``) as ``stream_range`` raises them."""

    def close(self) -> None: ...


@runtime_checkable
class StorageBackend(Protocol):
    """One configured store. Instances are created once and shared by all requests."""

    #: URL schemes whose paths this backend can own, e.g. ("s3", "s3a").
    schemes: ClassVar[tuple[str, ...]]

    name: str

    @classmethod
    def parse_options(cls, section: Section) -> object:
        """Read and validate this backend's options into a frozen object (errors go to section)."""

    @classmethod
    def local_root(cls, options: object) -> Path | None:
        """The folder whose files are the objects (a key is a path under it), or None for a
        store reached over the network. The nginx offload and ``documents add`` need one."""

    def __init__(self, name: str, options: object) -> None: ...

    async def open(self) -> None:
        """Create clients and sessions; called once in the app's lifespan."""

    async def close(self) -> None:
        """Release what ``open`` created."""

    def owns(self, netloc: str) -> bool:
        """Whether ``scheme://netloc/...`` paths belong to this backend."""

    def key_for(self, path: str) -> str:
        """Turn a relative catalog path into this backend's key; raise ``InvalidKey``."""

    def key_for_url(self, netloc: str, path: str) -> str:
        """Turn the path part of a full ``scheme://netloc/path`` URL into a key."""

    async def stat(self, key: str) -> ObjectInfo:
        """Size and validators of the object; raise ``ObjectNotFound`` or ``StorageError``."""

    def stream_range(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> AsyncIterator[bytes]:
        """Yield the bytes in ``[start, end)`` in bounded chunks, reading only that span.

        Given ``version`` (``ObjectInfo.version`` from ``stat``), raise ``ObjectChanged``
        rather than yield a byte of any other version, so a rewrite is never spliced in."""

    async def presign(self, request: PresignRequest) -> str | None:
        """A URL the client can fetch directly, or None when the store cannot sign."""

    async def probe(self) -> None:
        """One cheap call that proves the store answers (readiness); raise ``StorageError``."""
