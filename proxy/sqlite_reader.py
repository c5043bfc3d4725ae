"""A SQLite catalog read through one long-lived, read-only connection.

Why not ``databases`` here: its SQLite backend opens a new aiosqlite connection, and so starts a
new thread, for every query (profiled: 100 req/s on 10 KiB downloads, 90 % of the time in
connection set-up). A primary-key look-up on a local SQLite file takes about 10 µs, less than
one hop to a worker thread, so it runs on the event loop itself with a zero busy timeout: it
never waits there. When a writer holds the lock (``docproxy documents add`` mid-insert), the
query is retried in a worker thread on its own connection, which may wait ``busy_timeout``.
The file is opened with ``mode=ro``: docproxy never creates or writes an operator's file.

Rows are cached per process (``RowCache``), keyed by query and values, and the whole cache is
dropped as soon as ``PRAGMA data_version`` on the reader's connection changes: SQLite changes
that number whenever another connection commits to the file (rollback journal or WAL alike),
so a row updated or deleted by anyone is never served stale. The pragma costs about half a
look-up, and a hit skips the query, its row and the statement's read lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import anyio.to_thread

BUSY_TIMEOUT_SECONDS = 5.0
ROW_CACHE_ENTRIES = 4096
_MISSING = object()


def sqlite_file(url: str) -> str:
    """``sqlite:///./var/x.db`` -> ``./var/x.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    path = url.split("://", 1)[1].split("?", 1)[0]
    return path[1:] if path.startswith("/") else path


class SQLiteReader:
    """The subset of ``databases.Database`` the catalog uses, for one SQLite file."""

    def __init__(self, path: str) -> None:
        self._uri = f"file:{quote(path, safe='/:')}?mode=ro"
        self._connection: sqlite3.Connection | None = None
        self.cache = RowCache(ROW_CACHE_ENTRIES)

    def _open(self, timeout: float) -> sqlite3.Connection:
        connection = sqlite3.connect(self._uri, uri=True, timeout=timeout, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        return connection

    @property
    def raw_connection(self) -> sqlite3.Connection | None:
        return self._connection

    async def connect(self) -> None:
        try:
            self._connection = self._open(timeout=0)
        except sqlite3.Error as exc:
            raise ConnectionError(f"cannot open SQLite file: {exc}") from exc

    async def disconnect(self) -> None:
        self.cache.clear()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[SQLiteReader]:
        yield self

    async def fetch_one(
        self, query: str, values: Mapping[str, Any] | None = None
    ) -> sqlite3.Row | None:
        if self._connection is None:
            await self.connect()
        connection = self._connection
        assert connection is not None
        key = (query, tuple(values.items()) if values else ())
        try:
            # fetchall, not fetchone: see _first. Its one row is the version number.
            self.cache.validate(connection.execute("PRAGMA data_version").fetchall()[0][0])
            row = self.cache.get(key)
            if row is not _MISSING:
                return row  # type: ignore[return-value]
            row = _first(connection, query, values)
            self.cache.put(key, row)
            return row
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        return await anyio.to_thread.run_sync(self._fetch_waiting, query, values)

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


class RowCache:
    """Query results of one connection, valid while its ``data_version`` stays the same.

    Holds "no row" too: any insert commits, so it changes the version and empties the cache.
    At most ``max_entries``; the oldest entry goes first.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.version: int | None = None
        self._rows: dict[tuple[str, tuple[tuple[str, Any], ...]], sqlite3.Row | None] = {}

    def validate(self, version: int) -> None:
        if version != self.version:
            self._rows.clear()
            self.version = version

    def get(self, key: tuple[str, tuple[tuple[str, Any], ...]]) -> object:
        """The cached row (or None for "no row"), or ``_MISSING``."""
        return self._rows.get(key, _MISSING)

    def put(self, key: tuple[str, tuple[tuple[str, Any], ...]], row: sqlite3.Row | None) -> None:
        if len(self._rows) >= self.max_entries:
            del self._rows[next(iter(self._rows))]
        self._rows[key] = row

    def clear(self) -> None:
        self._rows.clear()
        self.version = None

    def __len__(self) -> int:
        return len(self._rows)
