"""Document metadata by id from the catalog database: the only part of docproxy that speaks SQL.

The catalog reads the operator's own table (or runs their one SELECT) and nothing else:
PostgreSQL and MySQL sessions are opened read-only and SQLite files in read-only mode, so even a
mistaken ``catalog.query`` cannot write. The connection is made lazily and re-made after the
database goes away, so a database that is down at start or restarts later only costs the
requests made while it is down (500), never a restart of docproxy.

Two caches at most stand between a request and the database: ``MetadataCache`` (found rows for
``catalog.cache.ttl`` seconds, off by default) and, on SQLite, the reader's own cache of
converted rows, dropped whenever the file changes (``proxy.catalog.sqlite_reader``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from proxy.catalog.dialect import Connection
from proxy.catalog.document import Document, document_from_row
from proxy.catalog.errors import CatalogError, CatalogMismatch, CatalogUnavailable, describe
from proxy.catalog.registry import dialect_of
from proxy.catalog.settings import CacheConfig, CatalogConfig
from proxy.catalog.sql import lookup_sql, mapping_problems, probe_sql
from proxy.common.caches import BoundedCache

logger = logging.getLogger("docproxy")


class MetadataCache:
    """Found rows by id for ``ttl`` seconds, least recently used evicted past ``max_entries``.

    Only rows are cached, never "not found": an application that inserts a document and hands
    out its id at once must not get 437 for a ttl. A soft-deleted row is a row (cached as
    deleted). Each worker process has its own cache.
    """

    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = config.ttl
        self._clock = clock
        self._entries: BoundedCache[str, tuple[float, Document]] = BoundedCache(config.max_entries)

    @property
    def max_entries(self) -> int:
        return self._entries.max_entries

    def get(self, document_id: str) -> Document | None:
        entry = self._entries.get(document_id)
        if entry is None:
            return None
        expires, document = entry
        if self._clock() >= expires:
            del self._entries[document_id]
            return None
        self._entries.touch(document_id)
        return document

    def put(self, document_id: str, document: Document) -> None:
        self._entries.pop(document_id, None)  # a new entry is the most recently used
        self._entries.put(document_id, (self._clock() + self.ttl, document))

    def __len__(self) -> int:
        return len(self._entries)


def _same_id(found: Any, document_id: str) -> bool:
    """A number is found by its decimal form only (MySQL compares '42abc' as 42, 'abc' as 0)."""
    return not isinstance(found, int) or str(found) == document_id


class Catalog:
    """Looks documents up by id over a pool it (re)connects on demand."""

    def __init__(self, config: CatalogConfig) -> None:
        self.config = config
        self.dialect = dialect_of(config.url)
        self._sql = lookup_sql(config)
        self._aliased = config.query is None
        self._database: Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._retry_after = 0.0
        self._last_failure = ""
        self._closing: set[asyncio.Task[None]] = set()
        self.cache = MetadataCache(config.cache) if config.cache.ttl > 0 else None

    @property
    def tenant_rule(self) -> bool:
        if self.config.tenant_rule == "auto":
            return self.config.columns.group is not None
        return self.config.tenant_rule == "on"

    async def open(self) -> None:
        """Connect and check the mapping at start.

        A mapping the live database contradicts raises CatalogMismatch (refuse to start); a
        database that cannot be reached is only logged: requests get 500 until it is back.
        """
        try:
            await self._ready_database()
        except CatalogMismatch:
            raise
        except CatalogError as exc:
            logger.warning(
                "catalog database unavailable at start (%s); answering 500 until it is back", exc
            )

    async def connect(self) -> None:
        """Connect now and check the mapping, raising CatalogUnavailable/CatalogMismatch."""
        await self._ready_database()

    async def disconnect(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            await self._close(database)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def get(self, document_id: str) -> Document | None:
        if self.cache is not None and (cached := self.cache.get(document_id)) is not None:
            return cached
        document = await self._fetch(document_id)
        if document is not None and self.cache is not None:
            self.cache.put(document_id, document)
        return document

    def _document(
        self, row: Mapping[str, Any] | None, values: Mapping[str, Any]
    ) -> Document | None:
        """The document a look-up's row describes (the reader caches what this returns)."""
        document_id = values["document_id"]
        if row is None or (self._aliased and not _same_id(row["doc_id"], document_id)):
            return None
        try:
            return document_from_row(row, self.config.columns, self._aliased)
        except (KeyError, ValueError, TypeError) as exc:
            raise CatalogError(f"unusable row for {document_id!r}: {describe(exc)}") from exc

    async def _fetch(self, document_id: str) -> Document | None:
        # Two tries: a pooled connection from before a database restart fails once, and the
        # second try runs on a fresh pool, so the first request after a restart succeeds.
        for attempt in (1, 2):
            database, fresh = await self._ready_database()
            try:
                return await database.lookup(
                    self._sql, {"document_id": document_id}, self._document
                )
            except CatalogError:
                raise
            except Exception as exc:
                if self.dialect.id_cannot_exist(exc):
                    logger.debug("catalog: id %r cannot exist: %s", document_id, exc)
                    return None
                if not self.dialect.connection_lost(exc):
                    raise CatalogError(describe(exc)) from exc
                self._discard(database)
                if fresh or attempt == 2:
                    raise CatalogUnavailable(f"connection lost: {describe(exc)}") from exc
                logger.warning("catalog connection lost (%s); reconnecting", describe(exc))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        """One trivial query on the pool (readiness); raise CatalogError saying why it failed.

        A lost connection is dropped here as in a look-up, so the next ping reconnects."""
        database, _ = await self._ready_database()
        try:
            await database.fetch_one("SELECT 1")
        except Exception as exc:
            if self.dialect.connection_lost(exc):
                self._discard(database)
                raise CatalogUnavailable(f"connection lost: {describe(exc)}") from exc
            raise CatalogError(describe(exc)) from exc

    async def _ready_database(self) -> tuple[Connection, bool]:
        """The connected database, and whether it was connected by this call."""
        database = self._database
        if database is not None:
            return database, False
        async with self._connect_lock:
            if self._database is not None:
                return self._database, False
            if time.monotonic() < self._retry_after:
                raise CatalogUnavailable(f"not reconnecting yet; last try: {self._last_failure}")
            try:
                database = await self._connect_and_check()
            except CatalogError as exc:
                self._retry_after = time.monotonic() + self.config.pool.retry_interval
                self._last_failure = str(exc)
                raise
            self._database = database
            logger.info("catalog connected (%s)", self.dialect.name)
            return database, True

    async def _connect_and_check(self) -> Connection:
        database = self.dialect.open(self.config)
        timeout = self.config.pool.connect_timeout
        try:
            await asyncio.wait_for(database.connect(), timeout)
        except TimeoutError as exc:
            raise CatalogUnavailable(f"no connection within {timeout:g}s") from exc
        except Exception as exc:
            raise CatalogUnavailable(describe(exc)) from exc
        try:
            await self._check_mapping(database)
        except BaseException:
            await self._close(database)
            raise
        return database

    async def _check_mapping(self, database: Connection) -> None:
        key = "catalog.query" if self.config.query is not None else "catalog.table"
        try:
            async with asyncio.timeout(self.config.pool.query_timeout):
                values = {"document_id": None} if self.config.query is not None else None
                row = await database.fetch_one(probe_sql(self.config), values)
                # keys(), not iteration: a driver's row may iterate over its values.
                names = row.keys() if row is not None else []
                available = [str(name) for name in names]
                problems = mapping_problems(self.config, available)
                if not problems:
                    self._sql, problems = await self.dialect.prepare_lookup(
                        database, lambda id_type: lookup_sql(self.config, id_type)
                    )
                if not problems:
                    # The real lookup, with an id that matches nothing, must run as well.
                    await database.fetch_one(self._sql, {"document_id": None})
        except TimeoutError as exc:
            raise CatalogUnavailable("checking the mapping timed out") from exc
        except Exception as exc:
            if self.dialect.connection_lost(exc):
                raise CatalogUnavailable(describe(exc)) from exc
            what = "catalog.query" if key == "catalog.query" else f'table "{self.config.table}"'
            raise CatalogMismatch([f"{key}: the database refused {what}: {exc}"]) from exc
        if problems:
            raise CatalogMismatch(problems)

    def _discard(self, database: Connection) -> None:
        """Forget a broken pool now; close it in the background (it may hang on dead sockets)."""
        if self._database is database:
            self._database = None
        task = asyncio.get_running_loop().create_task(self._close(database))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, database: Connection) -> None:
        try:
            await asyncio.wait_for(database.disconnect(), self.config.pool.connect_timeout)
        except Exception as exc:
            logger.debug("catalog: closing a pool failed: %s", exc)


async def check_live(config: CatalogConfig) -> None:
    """Connect once and check the mapping (``docproxy check-config`` and ``serve``).

    Raises CatalogMismatch with every problem, or CatalogUnavailable.
    """
    catalog = Catalog(config)
    try:
        await catalog.connect()
    finally:
        await catalog.disconnect()
