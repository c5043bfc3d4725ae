"""Files on a local disk, under one root folder."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

import anyio.to_thread

from backends.base import InvalidKey, ObjectInfo, ObjectNotFound, PresignRequest, StorageError
from backends.keys import relative_key
from backends.options import Section

DEFAULT_CHUNK_SIZE = 1024 * 1024
# Spans up to this size are read on the event loop: from the page cache that takes a few
# microseconds, less than the hop to a worker thread and back (profiled on 10 KiB documents).
INLINE_READ_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class LocalOptions:
    root: Path
    chunk_size: int = DEFAULT_CHUNK_SIZE
    create_root: bool = False


class LocalBackend:
    """Reads files below ``root``; never writes. Presigning is left to the proxy's own links."""

    schemes: ClassVar[tuple[str, ...]] = ("file",)

    def __init__(self, name: str, options: LocalOptions) -> None:
        self.name = name
        self.options = options
        self.chunk_size = options.chunk_size
        self._root = options.root
        self._real_root = os.path.realpath(options.root)

    @classmethod
    def parse_options(cls, section: Section) -> LocalOptions:
        root = section.string("root", required=True) or "."
        return LocalOptions(
            root=Path(root),
            chunk_size=section.size("chunk_size", DEFAULT_CHUNK_SIZE),
            create_root=section.boolean("create_root", False),
        )

    async def open(self) -> None:
        if self.options.create_root:
            self._root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self._root)

    async def close(self) -> None:
        return None

    def owns(self, netloc: str) -> bool:
        return netloc in ("", "localhost")

    def key_for(self, path: str) -> str:
        return relative_key(path)

    def key_for_url(self, netloc: str, path: str) -> str:
        # file:///abs/path is accepted only when it lies under the root.
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise InvalidKey(f"file URL outside the root: {path!r}")
        return relative_key(os.path.relpath(real, self._real_root))

    def _path(self, key: str) -> str:
        relative = relative_key(key)
        if _no_symlink_below(self._real_root, relative):
            # The root is already resolved and the key is normalised without "..": the
            # joined path is its own realpath (one lstat per key component, not per path).
            return os.path.join(self._real_root, relative)
        # realpath resolves symlinks, so a link pointing out of the root is caught here.
        real = os.path.realpath(os.path.join(self._real_root, relative))
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise InvalidKey(f"key resolves outside the root: {key!r}")
        return real

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            # On the loop, not in a thread: _path's realpath has just stat'ed every component
            # here anyway, and one more stat is cheaper than a thread hop.
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"stat {key!r}: {exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return ObjectInfo(
            size=st.st_size, etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"', modified=st.st_mtime
        )

    async def stream_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        path = self._path(key)
        length = end - start
        if length <= 0:
            return
        if length <= INLINE_READ_LIMIT:
            yield _read_span(path, start, length)
            return
        if length <= self.chunk_size:
            # One thread hop for open, read and close: small files are the common case.
            yield await anyio.to_thread.run_sync(_read_span, path, start, length)
            return
        try:
            handle: BinaryIO = await anyio.to_thread.run_sync(_open_at, path, start)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"open {key!r}: {exc}") from exc
        try:
            remaining = length
            while remaining > 0:
                try:
                    chunk = await anyio.to_thread.run_sync(
                        handle.read, min(self.chunk_size, remaining)
                    )
                except OSError as exc:
                    raise StorageError(f"read {key!r}: {exc}") from exc
                if not chunk:
                    raise StorageError(f"{key!r} ended {remaining} bytes early")
                remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def presign(self, request: PresignRequest) -> str | None:
        return None


def _no_symlink_below(real_root: str, relative: str) -> bool:
    """Whether every component of ``relative`` under ``real_root`` exists and is no symlink."""
    current = real_root
    for part in relative.split("/"):
        current = os.path.join(current, part)
        try:
            if stat.S_ISLNK(os.lstat(current).st_mode):
                return False
        except OSError:
            return False  # missing: let realpath and stat give the usual answer
    return True


def _open_at(path: str, offset: int) -> BinaryIO:
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller's finally
    handle.seek(offset)
    return handle


def _read_span(path: str, offset: int, length: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(length)
    except FileNotFoundError as exc:
        raise ObjectNotFound(path) from exc
    except OSError as exc:
        raise StorageError(f"read {path!r}: {exc}") from exc
    if len(data) != length:
        raise StorageError(f"{path!r} ended {length - len(data)} bytes early")
    return data
