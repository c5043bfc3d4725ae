"""A SQLite catalog read through one long-lived, read-only connection.

Why not ``databases`` here: its SQLite backend opens a new aiosqlite connection, and so starts a
new thread, for every query, which cost more than all the rest of a download. A primary-key
look-up on a local SQLite file costs less than one hop to a worker thread, so it runs on the
event loop itself with a zero busy timeout: it never waits there. When a writer holds the lock
(``docproxy documents add`` mid-insert), the query is retried in a worker thread on its own
connection, which may wait ``busy_timeout``. The file is opened with ``mode=ro``: docproxy never
creates or writes an operator's file.

Rows (or what the catalog made of them) are cached per process (``RowCache``), keyed by query
and values, and the whole cache is dropped as soon as ``PRAGMA data_version`` on the reader's
connection changes: SQLite changes that number whenever another connection commits to the file
(rollback journal or WAL alike), so a row updated or deleted by anyone is never served stale.
The pragma costs as much as the look-up itself (it takes and drops the file's read lock), so in
rollback-journal mode (the default, and the embedded catalog's) it is skipped while the file's
own change marker has not moved since the last pragma: the change counter at offset 24 of the
header, which every commit increments before it releases its lock (with the header's format
bytes, which say whether the file went to WAL). One ``pread`` of the header, no lock. In WAL
mode commits do not touch that counter, so there the pragma runs on every look-up.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import anyio.to_thread

from proxy.common.caches import BoundedCache

BUSY_TIMEOUT_SECONDS = 5.0
ROW_CACHE_ENTRIES = 4096
_MISSING = object()
HEADER_SIZE = 100
# Descriptors on catalog files read for their header, by (device, inode). Never closed: closing
# any descriptor of a file drops every POSIX lock this process holds on it, SQLite's included.
_HEADER_FDS: dict[tuple[int, int], int] = {}


def sqlite_file(url: str) -> str:
    """``sqlite:///./var/x.db`` -> ``./var/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    path = url.split("://", 1)[1].split("?", 1)[0]
    return path[1:] if path.startswith("/") else path


class SQLiteReader:
    """The subset of ``databases.Database`` the catalog uses, for one SQLite file."""

    def __init__(self, path: str) -> None:
        self._uri = f"file:{quote(path, safe='/:')}?mode=ro"
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self.cache = RowCache(ROW_CACHE_ENTRIES)
        self._header_fd: int | None = None
        self._marker: bytes | None = None  # the header's marker when the pragma last ran

    def _open(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(self._uri, uri=True, timeout=timeout, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        return connection

    async def connect(self) -> None:
        fd = _header_fd(self._path)
        try:
            self._connection = self._open(timeout=0)
        except sqlite3.Error as exc:
            raise ConnectionError(f"cannot open SQLite file: {exc}") from exc
        # The marker is trusted only when the descriptor names the file SQLite opened after it.
        self._header_fd = fd if fd is not None and _same_file(fd, self._path) else None
        self._marker = None

    async def disconnect(self) -> None:
        self.cache.clear()
        self._marker = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def fetch_one(
        self,
        query: str,
        values: Mapping[str, Any] | None = None,
        convert: Callable[[sqlite3.Row | None, Mapping[str, Any]], Any] | None = None,
    ) -> Any:
        """The first row of ``query``, or ``convert(row, values)`` of it: cached either way, so
        a hit hands back what was made of the row the first time."""
        if self._connection is None:
            await self.connect()
        connection = self._connection
        assert connection is not None
        key = (convert, query, tuple(values.items()) if values else ())
        try:
            marker = self._read_marker()
            if marker is None or marker != self._marker:
                # fetchall, not fetchone: see _first. Its one row is the version number.
                self.cache.validate(connection.execute("PRAGMA data_version").fetchall()[0][0])
                # Read before the pragma: a commit since then has moved it.
                self._marker = marker
            found = self.cache.get(key, _MISSING)
            if found is not _MISSING:
                return found
            row = _first(connection, query, values)
            found = row if convert is None else convert(row, values or {})
            self.cache.put(key, found)
            return found
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        row = await anyio.to_thread.run_sync(self._fetch_waiting, query, values)
        return row if convert is None else convert(row, values or {})

    # A request's look-up is a cached fetch like the checks' (``proxy.catalog.dialect``).
    lookup = fetch_one

    def _read_marker(self) -> bytes | None:
        """Header bytes 18-19 (format: 2 is WAL) and 24-27 (change counter), or None when they
        cannot vouch for the file (WAL mode, no descriptor, a short read)."""
        if self._header_fd is None:
            return None
        try:
            header = os.pread(self._header_fd, HEADER_SIZE, 0)
        except OSError:
            return None
        if len(header) < HEADER_SIZE or header[18] != 1 or header[19] != 1:
            return None
        return header[18:20] + header[24:28]

    def _fetch_waiting(self, query: str, values: Mapping[str, Any] | None) -> sqlite3.Row | None:
        connection = self._open(timeout=BUSY_TIMEOUT_SECONDS)
        try:
            return _first(connection, query, values)
        finally:
            connection.close()


def _first(
    connection: sqlite3.Connection, query: str, values: Mapping[str, Any] | None
) -> sqlite3.Row | None:
    # fetchall, not fetchone: a statement left unfinished keeps a read lock on the file, and
    # would lock out the one writer docproxy has (``documents add``) until the next query.
    rows = connection.execute(query, values or {}).fetchall()
    return rows[0] if rows else None


def _header_fd(path: str) -> int | None:
    """A read-only descriptor on ``path``, shared by every reader of that file in the process.

    One per file for the life of the process (see ``_HEADER_FDS``); an inode number is not
    reused while a descriptor holds it, so the key never names another file.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    fd = _HEADER_FDS.get((st.st_dev, st.st_ino))
    if fd is not None:
        return fd
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    opened = os.fstat(fd)
    # setdefault: if the file was replaced between stat and open by one already held, the
    # new descriptor stays open (and unused): closing it would drop SQLite's locks.
    return _HEADER_FDS.setdefault((opened.st_dev, opened.st_ino), fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RowCache(BoundedCache[tuple[Any, ...], Any]):
    """Query results of one connection, valid while its ``data_version`` stays the same.

    Holds "no row" too: any insert commits, so it changes the version and empties the cache.
    At most ``max_entries``; the oldest entry goes first.
    """

    def __init__(self, max_entries: int) -> None:
        super().__init__(max_entries)
        self.version: int | None = None

    def validate(self, version: int) -> None:
        if version != self.version:
            super().clear()
            self.version = version

    def clear(self) -> None:
        super().clear()
        self.version = None
