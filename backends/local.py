"""Files on a local disk, under one root folder."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio.to_thread

from backends.base import (
    InvalidKey,
    ObjectChanged,
    ObjectInfo,
    ObjectNotFound,
    PresignRequest,
    StorageError,
)
from backends.keys import relative_key
from proxy.config.section import Section, given

# Spans up to this size are read on the event loop: from the page cache that takes a few
# microseconds, less than the hop to a worker thread and back.
INLINE_READ_LIMIT = 64 * 1024
# preadv2(RWF_NOWAIT) reads only what is in the page cache, without blocking: Linux 4.14+.
CAN_READ_CACHED = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")


@dataclass(frozen=True, slots=True)
class LocalOptions:
    root: Path
    chunk_size: int = 1024 * 1024
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
        self._read_cached_ok = CAN_READ_CACHED  # cleared if this file system refuses RWF_NOWAIT

    @classmethod
    def parse_options(cls, section: Section) -> LocalOptions:
        root = section.string("root", required=True) or "."
        return LocalOptions(
            **given(
                root=Path(root),
                chunk_size=section.size("chunk_size"),
                create_root=section.boolean("create_root"),
            )
        )

    @classmethod
    def local_root(cls, options: LocalOptions) -> Path:
        return options.root

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
        return self._resolve(key)[0]

    def _resolve(self, key: str) -> tuple[str, os.stat_result | None]:
        """The real path of ``key`` under the root, and its ``lstat`` when that is its stat
        (no symlink on the way: the walk has just taken it), else None."""
        relative = relative_key(key)
        path, last = _walk_without_symlinks(self._real_root, relative)
        if last is not None:
            # The root is already resolved and the key is normalised without "..": the
            # joined path is its own realpath (one lstat per key component, not per path).
            return path, last
        # realpath resolves symlinks, so a link pointing out of the root is caught here.
        real = os.path.realpath(os.path.join(self._real_root, relative))
        if os.path.commonpath([real, self._real_root]) != self._real_root:
            raise InvalidKey(f"key resolves outside the root: {key!r}")
        return real, None

    async def stat(self, key: str) -> ObjectInfo:
        path, st = self._resolve(key)
        try:
            # On the loop, not in a thread: _resolve has just stat'ed every component here
            # anyway (and, without a symlink on the way, its lstat of the file is its stat).
            if st is None:
                st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"stat {key!r}: {exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return ObjectInfo(
            size=st.st_size,
            etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
            modified=st.st_mtime,
            version=_version(st),
        )

    async def stream_range(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        length = end - start
        if length <= 0:
            return
        if length <= INLINE_READ_LIMIT:
            yield _pread_span(path, start, length, version)
            return
        if length <= self.chunk_size:
            # One thread hop for open, read and close: small files are the common case.
            yield await anyio.to_thread.run_sync(_pread_span, path, start, length, version)
            return
        fd = await self._open(path, key)
        try:
            async for chunk in self._checked_chunks(fd, start, end, version, key, self.chunk_size):
                yield chunk
        finally:
            os.close(fd)

    async def _checked_chunks(
        self, fd: int, start: int, end: int, version: Hashable | None, key: str, size: int
    ) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the open ``fd`` in chunks of ``size``, each checked
        against ``version`` after its read and before it is handed on."""
        offset, remaining = start, end - start
        while remaining > 0:
            try:
                chunk = await self._read_chunk(fd, offset, min(size, remaining))
            except OSError as exc:
                raise StorageError(f"read {key!r}: {exc}") from exc
            if not chunk:
                raise StorageError(f"{key!r} ended {remaining} bytes early")
            # After the read, before the bytes go out: a write that touched them has
            # changed the file's mtime (or size) by now.
            _check_version(fd, version, key)
            offset += len(chunk)
            remaining -= len(chunk)
            yield chunk

    async def open_span(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> LocalSpan:
        """Bytes ``[start, end)`` of ``key`` as an open file, checked against ``version`` now;
        the caller checks it again after each piece it sends (see ``LocalSpan``)."""
        fd = await self._open(self._path(key), key)
        span = LocalSpan(fd, start, end, key, version, self._checked_chunks)
        try:
            span.check()
        except BaseException:
            span.close()
            raise
        return span

    async def _open(self, path: str, key: str) -> int:
        """A read-only descriptor of ``path`` (in a worker thread: an open may touch the disk)."""
        try:
            return await anyio.to_thread.run_sync(_open_read_only, path)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageError(f"open {key!r}: {exc}") from exc

    async def _read_chunk(self, fd: int, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``, fewer only at the end of the file.

        What the page cache holds is read right here on the event loop; only the rest goes to
        a worker thread, since a thread hop per chunk (futex, eventfd, two context switches)
        costs a big download much of its throughput.
        """
        buffer = bytearray(size)
        view = memoryview(buffer)
        try:
            got = self._read_cached(fd, view, offset)
            while got < size:
                n = await anyio.to_thread.run_sync(os.preadv, fd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
        finally:
            view.release()
        # A bytearray is sent as it is (uvicorn writes any bytes-like body): no copy to bytes.
        return buffer if got == size else buffer[:got]

    def _read_cached(self, fd: int, view: memoryview, offset: int) -> int:
        """Bytes read into ``view`` from the page cache alone: 0 when the first page is not
        there (or this system cannot tell), a short count when only a part is."""
        if not self._read_cached_ok:
            return 0
        try:
            return os.preadv(fd, [view], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._read_cached_ok = False  # e.g. a network file system: threads only
            return 0

    async def presign(self, request: PresignRequest) -> str | None:
        return None

    async def probe(self) -> None:
        """The root is a folder docproxy may read (in a thread: a network mount may hang)."""
        root = self._real_root
        if not await anyio.to_thread.run_sync(_readable_folder, root):
            raise StorageError(f"{self.name}: {root} is not a readable folder")


class LocalSpan:
    """An open file, pinned like ``stream_range``'s reads: its bytes leave by ``sendfile``
    without passing through Python, so the pin is checked after each piece instead of after
    each read (``check``); ``chunks`` reads the rest of it as ``stream_range`` does."""

    __slots__ = ("_chunks", "end", "fd", "key", "start", "version")

    def __init__(
        self,
        fd: int,
        start: int,
        end: int,
        key: str,
        version: Hashable | None,
        chunks: Callable[[int, int, int, Hashable | None, str, int], AsyncIterator[bytes]],
    ) -> None:
        self.fd = fd
        self.start = start
        self.end = end
        self.key = key
        self.version = version
        self._chunks = chunks

    def check(self) -> None:
        try:
            st = os.fstat(self.fd)
        except OSError as exc:
            raise StorageError(f"stat {self.key!r}: {exc}") from exc
        if self.version is not None and _version(st) != self.version:
            raise ObjectChanged(f"{self.key!r} changed during the read")
        if st.st_size < self.end:
            raise StorageError(f"{self.key!r} ended {self.end - st.st_size} bytes early")

    def chunks(self, offset: int, size: int) -> AsyncIterator[bytes]:
        return self._chunks(self.fd, offset, self.end, self.version, self.key, size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _readable_folder(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)


def _walk_without_symlinks(real_root: str, relative: str) -> tuple[str, os.stat_result | None]:
    """``real_root/relative``, and the ``lstat`` of its last component when every component
    exists and none is a symlink; else None for the stat."""
    current = real_root.rstrip("/")  # "" for the root folder "/"
    st = None
    for part in relative.split("/"):
        current = f"{current}/{part}"  # os.path.join, without its checks: both sides are clean
        try:
            st = os.lstat(current)
        except OSError:
            return current, None  # missing: let realpath and stat give the usual answer
        if stat.S_ISLNK(st.st_mode):
            return current, None
    return current, st


def _open_read_only(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What pins a read: an in-place rewrite changes the mtime (and maybe the size), a
    replacement (rename over the path) the inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _check_version(fd: int, version: Hashable | None, key: str) -> None:
    if version is not None and _version(os.fstat(fd)) != version:
        raise ObjectChanged(f"{key!r} changed during the read")


def _pread_span(path: str, offset: int, length: int, version: Hashable | None = None) -> bytes:
    """``length`` bytes at ``offset``: open, one pread (a loop only if it comes up short),
    the version check, close."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ObjectNotFound(path) from exc
    except OSError as exc:
        raise StorageError(f"read {path!r}: {exc}") from exc
    try:
        data = os.pread(fd, length, offset)
        if 0 < len(data) < length:
            pieces = [data]
            got = len(data)
            while got < length and (more := os.pread(fd, length - got, offset + got)):
                pieces.append(more)
                got += len(more)
            data = b"".join(pieces)
        _check_version(fd, version, path)
    except OSError as exc:
        raise StorageError(f"read {path!r}: {exc}") from exc
    finally:
        os.close(fd)
    if len(data) != length:
        raise StorageError(f"{path!r} ended {length - len(data)} bytes early")
    return data
