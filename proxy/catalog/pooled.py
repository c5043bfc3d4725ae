"""A server's pool through ``databases`` (SQLAlchemy under it), for the dialects that need one.

Its own module so that only a PostgreSQL or MySQL catalog imports ``databases``: the embedded
SQLite catalog reads its file directly and a sidecar should not pay for what it never uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from databases import Database

from proxy.catalog.dialect import Convert, Dialect
from proxy.catalog.errors import CatalogError
from proxy.catalog.settings import CatalogConfig

logger = logging.getLogger("docproxy")


class PooledDatabase:
    """A server's pool through ``databases``: each look-up within the query timeout, and a
    connection whose reply was cut off dropped (``drop``), since it cannot be used again."""

    def __init__(
        self,
        dialect: Dialect,
        config: CatalogConfig,
        options: Mapping[str, Any],
        drop: Callable[[Any], None],
    ) -> None:
        # The URL as ``databases`` spells it: the dialect's own name, no driver suffix.
        url = f"{dialect.name}://{config.url.split('://', 1)[1]}"
        self.database = Database(url, **options)
        self.query_timeout = config.pool.query_timeout
        self._drop = drop

    async def connect(self) -> None:
        await self.database.connect()

    async def disconnect(self) -> None:
        await self.database.disconnect()

    async def fetch_one(
        self, query: str, values: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        return await self.database.fetch_one(query, values)

    async def lookup(self, query: str, values: Mapping[str, Any], convert: Convert) -> Any:
        timeout = self.query_timeout
        try:
            async with asyncio.timeout(timeout), self.database.connection() as connection:
                try:
                    row = await connection.fetch_one(query, values)
                except asyncio.CancelledError:
                    self._drop_quietly(connection.raw_connection)
                    raise
        except TimeoutError as exc:
            raise CatalogError(f"the lookup took longer than {timeout:g}s") from exc
        return convert(row, values)

    def _drop_quietly(self, raw: Any) -> None:
        try:
            self._drop(raw)
        except Exception as exc:  # already broken: nothing more to release
            logger.debug("catalog: dropping a timed-out connection failed: %s", exc)
