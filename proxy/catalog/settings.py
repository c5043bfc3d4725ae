"""The ``catalog`` section of config.yaml, parsed by the catalog itself into frozen objects.

The field defaults below are the only ones: the parser passes on what the file gives
(``proxy.config.section.given``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from proxy.catalog.guard import read_only_query_problem
from proxy.catalog.registry import dialect, dialect_name
from proxy.config.section import Section, given


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Catalog column names for each document field; None when the table lacks it."""

    id: str = "id"
    file_path: str = "file_path"
    url: str | None = None
    name: str | None = None
    type: str | None = None
    group: str | None = None
    size: str | None = None
    checksum: str | None = None
    updated_at: str | None = None
    deleted: str | None = None


# The table docproxy creates in its embedded SQLite file (``catalog.embedded: true``).
EMBEDDED_TABLE = "documents"
EMBEDDED_COLUMNS = ColumnMap(
    id="id",
    file_path="file_path",
    url="document_url",
    name="name",
    type="type",
    group="group_name",
    size="size",
    checksum="checksum",
    updated_at="updated_at",
    deleted="deleted_at",
)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Connections to the catalog database; times are seconds."""

    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 5.0
    query_timeout: float = 10.0
    retry_interval: float = 1.0  # after a failed connect, answer 500 at once for this long


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Metadata cache per worker process; ``ttl`` 0 turns it off."""

    ttl: float = 0.0
    max_entries: int = 10_000


@dataclass(frozen=True, slots=True)
class CatalogConfig:
    url: str
    table: str = "documents"
    columns: ColumnMap = field(default_factory=ColumnMap)
    query: str | None = None
    embedded: bool = False  # docproxy owns this SQLite file and may create its table
    tenant_rule: str = "auto"  # auto: on when a group column is mapped
    pool: PoolConfig = field(default_factory=PoolConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


TENANT_RULES = ("auto", "on", "off")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def parse_catalog(s: Section) -> CatalogConfig:
    url = s.string("url", required=True) or ""
    name = dialect_name(url)
    if url and name is None:
        s.error(
            "url",
            "must be a sqlite:///path, postgresql://user@host/db or mysql://user@host/db URL"
            f" (got scheme {url.split('://', 1)[0]!r})",
        )
    embedded = s.boolean("embedded")
    if embedded and name is not None and not dialect(name).embeddable:
        s.error("embedded", "only a sqlite:// catalog can be embedded")
    query = _query(s)
    if embedded:
        for key in ("table", "columns", "query"):
            if s.raw(key) is not None:
                s.error(key, "not allowed with catalog.embedded: true (the schema is docproxy's)")
        table, columns, query = EMBEDDED_TABLE, EMBEDDED_COLUMNS, None
    else:
        if query is not None and s.has("table"):
            s.error("table", "not used with catalog.query: give a table mapping or a query")
        table = _identifier(s, "table", dotted=True)
        columns = _columns(s.section("columns"))
    config = CatalogConfig(
        **given(
            url=url,
            table=table,
            columns=columns,
            query=query,
            embedded=embedded,
            tenant_rule=s.string("tenant_rule", choices=TENANT_RULES),
            pool=_pool(s.section("pool")),
            cache=_cache(s.section("cache")),
        )
    )
    s.finish()
    return config


def _identifier(s: Section, key: str, *, dotted: bool = False) -> str | None:
    value = s.string(key)
    pattern = _TABLE if dotted else _IDENTIFIER
    if value is not None and not pattern.match(value):
        shape = "schema.table or table" if dotted else "a plain column name"
        s.error(key, f"must be {shape} (letters, digits, _ and $), got {value!r}")
        return None
    return value


def _columns(s: Section) -> ColumnMap:
    columns = ColumnMap(**given(**{f.name: _identifier(s, f.name) for f in fields(ColumnMap)}))
    s.finish()
    return columns


def _query(s: Section) -> str | None:
    query = s.string("query")
    if query is None:
        return None
    problem = read_only_query_problem(query)
    if problem is not None:
        s.error("query", problem)
        return None
    # One trailing ';' is harmless to the operator but not inside docproxy's probe subquery.
    return query.strip().removesuffix(";").rstrip()


def _pool(s: Section) -> PoolConfig:
    config = PoolConfig(
        **given(
            min_size=s.integer("min_size", minimum=0),
            max_size=s.integer("max_size", minimum=1),
            connect_timeout=s.number("connect_timeout", minimum=0.1),
            query_timeout=s.number("query_timeout", minimum=0.1),
            retry_interval=s.number("retry_interval", minimum=0),
        )
    )
    if config.min_size > config.max_size:
        s.error("min_size", f"must not exceed max_size ({config.min_size} > {config.max_size})")
    s.finish()
    return config


def _cache(s: Section) -> CacheConfig:
    config = CacheConfig(
        **given(ttl=s.number("ttl", minimum=0), max_entries=s.integer("max_entries", minimum=1))
    )
    s.finish()
    return config
