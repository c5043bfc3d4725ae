"""The shared state in a SQLite file, for the processes of one host (no Redis configured).

Writes take SQLite's write lock (``BEGIN IMMEDIATE``), so a count is atomic across workers and
the command line. Watchers poll a version number that every change of the revocations raises.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from proxy.state.errors import StateFailed
from proxy.state.revocation import Kind, Revocation

T = TypeVar("T")
POLL_SECONDS = 0.25  # a change is seen within a second by every worker on the host
BUSY_TIMEOUT = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, revoked_at REAL NOT NULL, until REAL,
    PRIMARY KEY (kind, value));
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL,
    expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS counters_expires ON counters (expires);
CREATE TABLE IF NOT EXISTS version (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER);
INSERT OR IGNORE INTO version VALUES (1, 0);
"""


class SQLiteState:
    def __init__(self, path: str) -> None:
        self.path = path

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        try:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateFailed(f"state file {self.path}: {exc}") from exc
        try:
            if not write:
                return work(connection)
            connection.execute("BEGIN IMMEDIATE")
            result = work(connection)
            connection.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StateFailed(f"state file {self.path}: {exc}") from exc
        finally:
            connection.close()

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        return await asyncio.to_thread(self._run, work, write)

    async def open(self) -> None:
        def create(c: sqlite3.Connection) -> None:
            c.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            c.executescript(SCHEMA)

        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateFailed(f"state file {self.path}: {exc.strerror}") from exc
        await self._call(create, write=False)

    async def close(self) -> None:
        pass

    async def revoke(self, revocation: Revocation) -> None:
        def work(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO revocations VALUES (?, ?, ?, ?)",
                (revocation.kind.value, revocation.value, revocation.revoked_at, revocation.until),
            )
            lapsed = "DELETE FROM revocations WHERE until IS NOT NULL AND until <= ?"
            c.execute(lapsed, (time.time(),))
            c.execute("UPDATE version SET value = value + 1")

        await self._call(work)

    async def unrevoke(self, kind: Kind, value: str) -> bool:
        def work(c: sqlite3.Connection) -> bool:
            deleted = c.execute(
                "DELETE FROM revocations WHERE kind = ? AND value = ?", (kind.value, value)
            ).rowcount
            c.execute("UPDATE version SET value = value + 1")
            return deleted > 0

        return await self._call(work)

    async def revocations(self) -> list[Revocation]:
        def work(c: sqlite3.Connection) -> list[Revocation]:
            rows = c.execute("SELECT kind, value, revoked_at, until FROM revocations").fetchall()
            return [Revocation(Kind(k), v, at, until) for k, v, at, until in rows]

        now = time.time()
        return [r for r in await self._call(work, write=False) if r.active(now)]

    async def _version(self) -> int:
        def work(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT value FROM version").fetchone()[0])

        return await self._call(work, write=False)

    async def changes(self) -> AsyncIterator[None]:
        seen: int | None = None
        while True:
            try:
                version = await self._version()
            except StateFailed:
                version = seen  # keep the last snapshot; the next poll tries again
            if version != seen:
                seen = version
                yield
            await asyncio.sleep(POLL_SECONDS)

    async def increment(self, key: str, expires: int) -> int:
        def work(c: sqlite3.Connection) -> int:
            now = int(time.time())
            c.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            row = c.execute(
                "INSERT INTO counters VALUES (?, 1, ?) ON CONFLICT (key) DO UPDATE"
                " SET count = count + 1 RETURNING count",
                (key, expires),
            ).fetchone()
            if row[0] == 1:  # a new counter: forget the dead ones
                c.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            return int(row[0])

        return await self._call(work)

    async def count(self, key: str) -> int:
        def work(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT count FROM counters WHERE key = ? AND expires > ?", (key, int(time.time()))
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._call(work, write=False)
