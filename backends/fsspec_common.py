"""What the object stores reached through fsspec share: options, keys, stat and ranged reads.

Each store module (s3, gcs, azure, memory) subclasses ``FsspecBackend`` with the code that is
truly its own: building the async filesystem in ``open``, closing it, and presigning.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from backends.base import InvalidKey, ObjectInfo, ObjectNotFound, PresignRequest, StorageError
from backends.keys import relative_key
from proxy.config.section import Section, given

PRESIGN_MODES = ("native", "proxy")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """The options every object store has."""

    bucket: str  # the bucket (S3, GCS) or container (Azure)
    prefix: str = ""  # relative catalog paths live under it
    endpoint_url: str | None = None  # where the proxy reaches the store
    public_endpoint_url: str | None = None  # the host presigned URLs name, for clients
    chunk_size: int = 1024 * 1024
    presign: str = "native"  # or "proxy": the proxy's own signed links
    timeout: float = 30.0  # per store call, retries included


def parse_store_options(section: Section, *, bucket_key: str = "bucket") -> StoreOptions:
    """Read the shared keys; the caller reads its own and calls ``section.finish`` (the config)."""
    bucket = section.string(bucket_key, required=True) or ""
    if "/" in bucket:
        section.error(bucket_key, f"must be a bare name without '/' (got {bucket!r})")
    prefix = section.string("prefix")
    return StoreOptions(
        **given(
            bucket=bucket,
            prefix=prefix.strip("/") if prefix is not None else None,
            endpoint_url=_url(section, "endpoint_url"),
            public_endpoint_url=_url(section, "public_endpoint_url"),
            chunk_size=section.size("chunk_size", minimum=4096),
            presign=section.string("presign", choices=PRESIGN_MODES),
            timeout=section.number("timeout", minimum=0.1),
        )
    )


def _url(section: Section, key: str) -> str | None:
    value = section.string(key)
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
        section.error(key, f"must be an http(s) URL (got {value!r})")
        return None
    return value.rstrip("/")


def secret_from_env(section: Section, key: str) -> str | None:
    """The value of the environment variable that config key ``key`` names, if it is given.

    Secrets are referenced, never written in config.yaml: ``key_env: AWS_ACCESS_KEY_ID``.
    """
    name = section.string(key)
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        section.error(key, f"environment variable {name} is not set")
        return None
    return value


class FsspecBackend:
    """A bucket of an fsspec async filesystem; subclasses create and close ``self.fs``."""

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.options = options
        self.store: StoreOptions = options.store
        self.chunk_size = self.store.chunk_size
        self.fs: Any = None

    @classmethod
    def local_root(cls, options: object) -> None:
        return None  # objects are reached over the network (or in memory), never as files

    # -- lifecycle: subclasses build the filesystem -------------------------------------------

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def probe(self) -> None:
        raise NotImplementedError

    # -- addressing -------------------------------------------------------------------------

    def owns(self, netloc: str) -> bool:
        return netloc == self.store.bucket

    def key_for(self, path: str) -> str:
        return relative_key(path, self.store.prefix)

    def key_for_url(self, netloc: str, path: str) -> str:
        # A full URL names the exact object: the prefix is not added, traversal still refused.
        return relative_key(path[1:] if path.startswith("/") else path)

    def _path(self, key: str) -> str:
        return f"{self.store.bucket}/{self._object_key(key)}"

    def _object_key(self, key: str) -> str:
        """The object's name in the bucket, as the store's SDK wants it."""
        return relative_key(key)

    # -- reading ----------------------------------------------------------------------------

    async def _call(self, operation: str, key: str, call: Awaitable[T]) -> T:
        """Await a store call with the configured timeout; translate its failures."""
        where = f"{self.name}:{key}" if key else f"{self.name} (bucket {self.store.bucket})"
        try:
            return await asyncio.wait_for(call, self.store.timeout)
        except FileNotFoundError as exc:
            raise ObjectNotFound(where) from exc
        except (StorageError, InvalidKey):
            raise
        except TimeoutError as exc:
            raise StorageError(
                f"{operation} {where}: the store did not answer within {self.store.timeout:g}s"
            ) from exc
        except Exception as exc:
            raise StorageError(f"{operation} {where}: {describe(exc)}") from exc

    async def stat(self, key: str) -> ObjectInfo:
        info = await self._call("stat", key, self.fs._info(self._path(key)))
        if info.get("type", "file") != "file":
            raise ObjectNotFound(f"{self.name}:{key} is a directory")
        etag = _etag(info)
        return ObjectInfo(
            size=int(info["size"]),
            etag=etag,
            modified=_modified(info),
            version=self._version(info, etag),
        )

    def _version(self, info: Mapping[str, Any], etag: str | None) -> Hashable | None:
        """What pins reads to the bytes ``info`` describes; None: this store's reads are not
        pinned. Stores that override it also override ``_read`` to send it."""
        return None

    async def _read(self, key: str, start: int, end: int, version: Hashable | None) -> bytes:
        """The bytes in ``[start, end)``, or fewer: callers loop until they have them all.
        Stores that pin reads override this (and ``stat``); here ``version`` is unused."""
        return await self._call(
            "read", key, self.fs._cat_file(self._path(key), start=start, end=end)
        )

    def stream_range(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> AsyncIterator[bytes]:
        """Ranged reads of at most ``chunk_size``, the next one fetched while this one is sent,
        each pinned to ``version`` where the store's ``_read`` can pin."""

        def read(position: int, size: int) -> Awaitable[bytes]:
            return self._read(key, position, position + size, version)

        return read_ahead(read, start, end, self.chunk_size, f"{self.name}:{key}")

    # -- presigning -------------------------------------------------------------------------

    async def presign(self, request: PresignRequest) -> str | None:
        if self.store.presign == "proxy":
            return None
        return self._presign_native(request)

    def _presign_native(self, request: PresignRequest) -> str:
        raise NotImplementedError


async def read_ahead(
    read: Callable[[int, int], Awaitable[bytes]], start: int, end: int, chunk_size: int, where: str
) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` as ``read(position, size)`` hands them out, at most ``chunk_size``
    a read, the next one started while this one is sent (one ahead, no more).

    A short answer is not the end of the object: the next read starts where it stopped. Only an
    empty answer before ``end`` is, and then the object is shorter than its stat said, which is
    a storage fault, never a silent truncation; so is an answer longer than asked for.
    """
    position = start
    if end <= position:
        return
    pending: asyncio.Future[bytes] | None = asyncio.ensure_future(
        read(position, min(chunk_size, end - position))
    )
    try:
        while pending is not None:
            wanted = min(chunk_size, end - position)
            data = await pending
            pending = None
            if not data:
                raise StorageError(
                    f"read {where}: object ended at byte {position}, {end - position} bytes early"
                )
            if len(data) > wanted:
                raise StorageError(
                    f"read {where}: store sent {len(data)} bytes for a {wanted}-byte range "
                    "(range ignored)"
                )
            position += len(data)
            if position < end:
                pending = asyncio.ensure_future(read(position, min(chunk_size, end - position)))
            yield data
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


def describe(exc: BaseException) -> str:
    """``Type: message``, and the message of its direct cause when it leaves that out: an SDK
    error such as "Could not connect to the endpoint URL" does not say whether the connection
    was refused, the name did not resolve or the TLS handshake failed."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    detail = str(cause) if cause is not None else ""
    return f"{text} ({detail})" if detail and detail not in text else text


def _etag(info: Mapping[str, Any]) -> str | None:
    for field in ("ETag", "etag", "Etag"):
        value = info.get(field)
        if value:
            value = str(value)
            return value if value.startswith(('"', 'W/"')) else f'"{value}"'
    return None


def _modified(info: Mapping[str, Any]) -> float | None:
    for field in ("LastModified", "last_modified", "updated", "mtime", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
