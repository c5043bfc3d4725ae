"""Document metadata from a SQL table through ``databases``: the only module that speaks SQL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from databases import Database

from proxy.config import CatalogConfig, ColumnMap
from proxy.sqlite_reader import SQLiteReader

FIELDS = (
    "id",
    "file_path",
    "url",
    "name",
    "type",
    "group",
    "size",
    "checksum",
    "updated_at",
    "deleted",
)


class CatalogError(Exception):
    """The database failed or refused the query."""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    file_path: str | None
    url: str | None = None
    name: str | None = None
    type: str | None = None
    group: str | None = None
    size: int | None = None
    checksum: str | None = None
    updated_at: str | None = None
    deleted: bool = False


def quote_identifier(name: str, dialect: str) -> str:
    """Quote a config-validated identifier (``schema.table`` allowed) for ``dialect``."""
    quote = "`" if dialect == "mysql" else '"'
    return ".".join(f"{quote}{part}{quote}" for part in name.split("."))


def dialect_of(url: str) -> str:
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return {"postgres": "postgresql"}.get(scheme, scheme)


def lookup_sql(config: CatalogConfig) -> str:
    """The SELECT for one document; the id is always the bound ``:document_id`` parameter."""
    if config.query is not None:
        return config.query
    dialect = dialect_of(config.url)
    selected = [
        f"{quote_identifier(column, dialect)} AS {quote_identifier('doc_' + field, dialect)}"
        for field in FIELDS
        if (column := getattr(config.columns, field)) is not None
    ]
    id_column = quote_identifier(config.columns.id, dialect)
    return (
        f"SELECT {', '.join(selected)} FROM {quote_identifier(config.table, dialect)} "
        f"WHERE {id_column} = :document_id"
    )


def document_from_row(row: Mapping[str, Any], columns: ColumnMap, aliased: bool) -> Document:
    def value(field: str) -> Any:
        column = getattr(columns, field)
        if column is None:
            return None
        return row[f"doc_{field}"] if aliased else row[column]

    size = value("size")
    updated = value("updated_at")
    return Document(
        id=str(value("id")),
        file_path=_text(value("file_path")),
        url=_text(value("url")),
        name=_text(value("name")),
        type=_text(value("type")),
        group=_text(value("group")),
        size=int(size) if size is not None else None,
        checksum=_text(value("checksum")),
        updated_at=str(updated) if updated is not None else None,
        deleted=_is_deleted(value("deleted")),
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if text.strip() else None


def _is_deleted(marker: Any) -> bool:
    """A soft-delete marker counts when it is a set timestamp or a true flag."""
    if marker is None:
        return False
    if isinstance(marker, bool | int):
        return bool(marker)
    if isinstance(marker, str):
        return marker.strip().lower() not in ("", "0", "false", "no", "n", "f")
    return True


class Catalog:
    """Looks documents up by id. Connect once in the lifespan; every call is one query."""

    def __init__(self, config: CatalogConfig) -> None:
        self.config = config
        # SQLite gets one long-lived read-only connection (see proxy.sqlite_reader for why).
        self._database: Database | SQLiteReader = (
            SQLiteReader(config.url) if dialect_of(config.url) == "sqlite" else Database(config.url)
        )
        self._sql = lookup_sql(config)
        self._aliased = config.query is None

    @property
    def tenant_rule(self) -> bool:
        if self.config.tenant_rule == "auto":
            return self.config.columns.group is not None
        return self.config.tenant_rule == "on"

    async def connect(self) -> None:
        try:
            await self._database.connect()
        except Exception as exc:
            raise CatalogError(f"cannot connect to the catalog: {exc}") from exc

    async def disconnect(self) -> None:
        await self._database.disconnect()

    async def get(self, document_id: str) -> Document | None:
        try:
            row = await self._database.fetch_one(self._sql, {"document_id": document_id})
        except Exception as exc:
            raise CatalogError(f"{type(exc).__name__}: {exc}") from exc
        if row is None:
            return None
        return document_from_row(row, self.config.columns, self._aliased)
