"""What the catalog needs to know of a SQL dialect, and the pooled connection of a server.

Each dialect is a module of this package (``sqlite``, ``postgresql``, ``mysql``) whose class
overrides only what its database does differently; ``proxy.catalog.registry`` finds it by the
URL's scheme. Nothing outside those modules asks which database it is talking to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from proxy.catalog.settings import CatalogConfig, PoolConfig

# ``:document_id`` wherever SQLAlchemy's ``text()`` (under ``databases``) binds it.
DOCUMENT_ID = re.compile(r"(?<![:\w\\]):document_id(?![:\w])")

#: What a look-up makes of the row it found (or None), given the values it was bound with.
Convert = Callable[[Mapping[str, Any] | None, Mapping[str, Any]], Any]


class Connection(Protocol):
    """An open database as the catalog uses it."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def fetch_one(
        self, query: str, values: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        """One row for the checks made at start; the caller bounds the time."""

    async def lookup(self, query: str, values: Mapping[str, Any], convert: Convert) -> Any:
        """A request's look-up: ``convert`` of its row, within the query timeout."""


class Dialect:
    """The defaults: standard SQL quoting, names compared case-insensitively, and only the
    errors every driver shares (``OSError`` and kin) counted as a lost connection."""

    name: ClassVar[str]
    #: Whether docproxy may own a database of this dialect (``catalog.embedded``).
    embeddable: ClassVar[bool] = False
    quote_char: ClassVar[str] = '"'
    #: Whether a quoted column name must match in case (PostgreSQL's do).
    case_sensitive_names: ClassVar[bool] = False

    def quote(self, identifier: str) -> str:
        """Quote a config-validated identifier (``schema.table`` allowed)."""
        q = self.quote_char
        return ".".join(f"{q}{part.replace(q, q * 2)}{q}" for part in identifier.split("."))

    def fold(self, name: str) -> str:
        """A column name as the database compares it."""
        return name if self.case_sensitive_names else name.lower()

    def open(self, config: CatalogConfig) -> Connection:
        """The database ``config`` names, not yet connected."""
        raise NotImplementedError

    def connection_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` means the connection or server went away, not that the SQL failed."""
        return isinstance(exc, OSError | ConnectionError | EOFError)

    def id_cannot_exist(self, exc: BaseException) -> bool:
        """The database refused the id's value for the id column's type: no such document."""
        return isinstance(exc, UnicodeError)

    async def prepare_lookup(
        self, connection: Connection, lookup: Callable[[str | None], str]
    ) -> tuple[str, list[str]]:
        """The look-up SQL to run and what the database says is wrong with it, once per
        connection after the mapping is checked. ``lookup(id_type)`` writes the SQL, the id
        cast to ``id_type`` unless that is None."""
        return lookup(None), []


def pool_options(pool: PoolConfig) -> dict[str, Any]:
    """The pool's size, in the words asyncpg and aiomysql share."""
    return {"min_size": pool.min_size, "max_size": pool.max_size}
