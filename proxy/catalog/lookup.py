"""Document metadata from a SQL table through ``databases``: the only module that speaks SQL.

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
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from databases import Database

from proxy.catalog.settings import CacheConfig, CatalogConfig, ColumnMap, catalog_scheme
from proxy.catalog.sqlite_reader import SQLiteReader, sqlite_file
from proxy.common.caches import BoundedCache

# ``databases`` for PostgreSQL and MySQL; SQLite has its own reader with the same surface.
SQLDatabase = Database | SQLiteReader

logger = logging.getLogger("docproxy")

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


class CatalogUnavailable(CatalogError):
    """The database cannot be reached (down, refusing connections, or timing out)."""


class CatalogMismatch(CatalogError):
    """The live database does not fit the mapping; ``problems`` name each config key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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
    quote_char = "`" if dialect == "mysql" else '"'
    return ".".join(
        f"{quote_char}{part.replace(quote_char, quote_char * 2)}{quote_char}"
        for part in name.split(".")
    )


def dialect_of(url: str) -> str:
    return catalog_scheme(url) or url.split(":", 1)[0]


# PostgreSQL types the bound text id is compared as without a cast (regtype names).
_PG_TEXT_TYPES = ("text", "character varying", "character", "name", "citext", "unknown")

# ``:document_id`` wherever SQLAlchemy's ``text()`` (under ``databases``) binds it.
_DOCUMENT_ID = re.compile(r"(?<![:\w\\]):document_id(?![:\w])")


def lookup_sql(config: CatalogConfig, id_type: str | None = None) -> str:
    """The SELECT for one document; the id is always the bound ``:document_id`` parameter.

    ``id_type`` is the non-text type PostgreSQL gives the parameter (``bigint``, ``uuid``...):
    the id is then bound as text and cast in SQL, because asyncpg will not send a ``str`` as a
    number. The cast keeps the id column's index, and an id of the wrong shape is a data error
    (no such document).
    """
    parameter = ":document_id"
    if id_type is not None:
        parameter = f"CAST(CAST(:document_id AS text) AS {id_type})"
    if config.query is not None:
        return _DOCUMENT_ID.sub(parameter, config.query)
    dialect = dialect_of(config.url)
    selected = [
        f"{quote_identifier(column, dialect)} AS {quote_identifier('doc_' + field, dialect)}"
        for field in FIELDS
        if (column := getattr(config.columns, field)) is not None
    ]
    id_column = quote_identifier(config.columns.id, dialect)
    return (
        f"SELECT {', '.join(selected)} FROM {quote_identifier(config.table, dialect)} "
        f"WHERE {id_column} = {parameter}"
    )


@dataclass(frozen=True, slots=True)
class PostgresLookup:
    """What PostgreSQL makes of the lookup: the id's type and the functions that may write."""

    id_type: str | None
    writers: list[str]


_PG_STATEMENT = "docproxy_lookup"
# In EXPLAIN's deparsed expressions: a function call (schema-qualified when not on the search
# path), or a quoted name or a literal, skipped so that nothing inside them counts as a call.
_PG_NAME = r'"(?:[^"]|"")+"|[a-z_][a-z0-9_]*'
_PG_TOKEN = re.compile(
    rf"(?:(?P<schema>{_PG_NAME})\.)?(?P<name>{_PG_NAME})\("
    r"""|"(?:[^"]|"")*"|'(?:[^']|'')*'"""
)
# PostgreSQL requires a function that writes to be VOLATILE and PARALLEL UNSAFE.
_PG_WRITERS = """
SELECT DISTINCT p.oid::regprocedure::text AS writer
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN unnest($1::text[], $2::text[]) AS called(schema_name, function_name)
  ON p.proname = called.function_name
WHERE p.provolatile = 'v' AND p.proparallel = 'u'
  AND (n.nspname = called.schema_name
       OR (called.schema_name = '' AND pg_function_is_visible(p.oid)))
ORDER BY 1
"""


async def inspect_postgres_lookup(database: Database, sql: str) -> PostgresLookup:
    """Prepare the lookup in a read-only transaction and read its generic plan.

    PostgreSQL calls a query's functions only for the rows it reads, so a lookup that matches
    nothing cannot reveal a function that writes; the plan names every function it would call.
    """
    async with database.connection() as connection:
        raw = connection.raw_connection
        async with raw.transaction(readonly=True):
            await raw.execute(f"PREPARE {_PG_STATEMENT} AS {_DOCUMENT_ID.sub('$1', sql)}")
            await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            types = await raw.fetchval(
                "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = $1",
                _PG_STATEMENT,
            )
            plan = await raw.fetchval(
                f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {_PG_STATEMENT}(NULL)"
            )
            await raw.execute(f"DEALLOCATE {_PG_STATEMENT}")
            calls = _called_functions(json.loads(plan))
            writers: list[str] = []
            if calls:
                schemas, names = zip(*sorted(calls), strict=True)
                rows = await raw.fetch(_PG_WRITERS, list(schemas), list(names))
                writers = [row["writer"] for row in rows]
    id_type = types[0]
    bare_type = id_type.rsplit(".", 1)[-1].strip('"')
    return PostgresLookup(None if bare_type in _PG_TEXT_TYPES else id_type, writers)


def _called_functions(plan: Any) -> set[tuple[str, str]]:
    """(schema or '', name) of every function call in an EXPLAIN (FORMAT JSON) plan."""
    if isinstance(plan, dict):
        return set().union(*(_called_functions(value) for value in plan.values()))
    if isinstance(plan, list):
        return set().union(*(_called_functions(value) for value in plan))
    if not isinstance(plan, str):
        return set()
    return {
        (_unquote(match["schema"] or ""), _unquote(match["name"]))
        for match in _PG_TOKEN.finditer(plan)
        if match["name"] is not None
    }


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def probe_sql(config: CatalogConfig) -> str:
    """One all-NULL row whose keys are the table's (or the query's) column names.

    The outer join on a false condition returns exactly one row on every dialect, so the
    column names come back through ``databases`` without driver-specific metadata calls.
    """
    dialect = dialect_of(config.url)
    if config.query is not None:
        source = f"({config.query})"
    else:
        source = quote_identifier(config.table, dialect)
    return f"SELECT probe.* FROM (SELECT 1 AS one) AS anchor LEFT JOIN {source} AS probe ON 1 = 0"


def mapping_problems(config: CatalogConfig, available: list[str]) -> list[str]:
    """Each mapped column missing from ``available``, named by its config key."""
    dialect = dialect_of(config.url)
    if config.query is not None:
        # Result keys are looked up as written, so the names must match exactly.
        present = set(available)
        where = "the result of catalog.query"
        fold: Callable[[str], str] = str
    else:
        # PostgreSQL names are case-sensitive once quoted; MySQL and SQLite columns are not.
        fold = str if dialect == "postgresql" else str.lower
        present = {fold(name) for name in available}
        where = f'table "{config.table}"'
    return [
        f'catalog.columns.{field}: column "{column}" not found in {where}'
        f" (it has: {', '.join(available) or 'no columns'})"
        for field in FIELDS
        if (column := getattr(config.columns, field)) is not None and fold(column) not in present
    ]


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


def _database_url(config: CatalogConfig) -> str:
    """The URL for ``databases``, scheme normalised (``postgres+asyncpg`` -> ``postgresql``)."""
    return f"{dialect_of(config.url)}://{config.url.split('://', 1)[1]}"


def _driver_options(config: CatalogConfig) -> dict[str, Any]:
    """Pool, timeouts and the read-only session, in each driver's own words."""
    pool = config.pool
    dialect = dialect_of(config.url)
    if dialect == "postgresql":
        return {
            "min_size": pool.min_size,
            "max_size": pool.max_size,
            "timeout": pool.connect_timeout,
            "server_settings": {
                "default_transaction_read_only": "on",
                "statement_timeout": str(int(pool.query_timeout * 1000)),
                "application_name": "docproxy",
            },
        }
    if dialect == "mysql":
        return {
            "min_size": pool.min_size,
            "max_size": pool.max_size,
            "connect_timeout": pool.connect_timeout,
            "init_command": "SET SESSION TRANSACTION READ ONLY",
        }
    return {"uri": True, "timeout": pool.query_timeout}


def _connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the connection or server went away, not that the SQL failed."""
    if isinstance(exc, OSError | ConnectionError | EOFError):
        return True
    import asyncpg
    import pymysql

    if isinstance(
        exc,
        asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.OperatorInterventionError,
    ):
        return True
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    # 2003 cannot connect, 2006 server has gone away, 2013 lost connection during query.
    return (
        isinstance(exc, pymysql.err.OperationalError)
        and bool(exc.args)
        and exc.args[0]
        in (
            2003,
            2006,
            2013,
            2055,
        )
    )


def _id_cannot_exist(exc: BaseException) -> bool:
    """The database refused the id's value for the id column's type: no such document.

    PostgreSQL, unlike MySQL and SQLite, refuses ``'abc'`` for an integer or uuid id column.
    """
    if isinstance(exc, UnicodeError):
        return True
    import asyncpg

    return type(exc) is asyncpg.DataError or isinstance(
        exc,
        asyncpg.InvalidTextRepresentationError
        | asyncpg.NumericValueOutOfRangeError
        | asyncpg.CharacterNotInRepertoireError
        | asyncpg.UntranslatableCharacterError,
    )


def _same_id(found: Any, document_id: str) -> bool:
    """A number is found by its decimal form only (MySQL compares '42abc' as 42, 'abc' as 0)."""
    return not isinstance(found, int) or str(found) == document_id


def _writers_problem(writers: list[str]) -> str:
    return (
        f"catalog.query: calls {', '.join(writers)}, which PostgreSQL lets write to the database"
        " (VOLATILE and PARALLEL UNSAFE); docproxy's session is read-only, so every lookup"
        " would fail. Declare a function that only reads STABLE"
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"


class _OneLineErrors(logging.Filter):
    """asyncpg's pool logs a traceback each time it cannot restore its floor while the database
    is down; docproxy already logs that outage, so keep it to one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {_describe(record.exc_info[1])}"
            record.args = ()
            record.exc_info = None
        return True


_ASYNCPG_POOL_LOG = logging.getLogger("asyncpg.pool")
if not any(isinstance(f, _OneLineErrors) for f in _ASYNCPG_POOL_LOG.filters):
    _ASYNCPG_POOL_LOG.addFilter(_OneLineErrors())


class Catalog:
    """Looks documents up by id over a pool it (re)connects on demand."""

    def __init__(self, config: CatalogConfig) -> None:
        self.config = config
        self.dialect = dialect_of(config.url)
        self._sql = lookup_sql(config)
        self._aliased = config.query is None
        self._database: SQLDatabase | None = None
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
        """The document a look-up's row describes (the SQLite reader caches what this returns)."""
        document_id = values["document_id"]
        if row is None or (self._aliased and not _same_id(row["doc_id"], document_id)):
            return None
        try:
            return document_from_row(row, self.config.columns, self._aliased)
        except (KeyError, ValueError, TypeError) as exc:
            raise CatalogError(f"unusable row for {document_id!r}: {_describe(exc)}") from exc

    async def _fetch(self, document_id: str) -> Document | None:
        # Two tries: a pooled connection from before a database restart fails once, and the
        # second try runs on a fresh pool, so the first request after a restart succeeds.
        for attempt in (1, 2):
            database, fresh = await self._ready_database()
            try:
                return await self._fetch_on(database, document_id)
            except CatalogError:
                raise
            except Exception as exc:
                if _id_cannot_exist(exc):
                    logger.debug("catalog: id %r cannot exist: %s", document_id, exc)
                    return None
                if not _connection_lost(exc):
                    raise CatalogError(_describe(exc)) from exc
                self._discard(database)
                if fresh or attempt == 2:
                    raise CatalogUnavailable(f"connection lost: {_describe(exc)}") from exc
                logger.warning("catalog connection lost (%s); reconnecting", _describe(exc))
        raise AssertionError("unreachable")

    async def _fetch_on(self, database: SQLDatabase, document_id: str) -> Document | None:
        values = {"document_id": document_id}
        if isinstance(database, SQLiteReader):
            # Runs on the loop without waiting (or in a thread bounded by its busy timeout):
            # nothing here for a timeout to cut short, and a timeout scope costs per lookup.
            return await database.fetch_one(self._sql, values, self._document)
        timeout = self.config.pool.query_timeout
        try:
            async with asyncio.timeout(timeout), database.connection() as connection:
                try:
                    row = await connection.fetch_one(self._sql, values)
                except asyncio.CancelledError:
                    # A query cut off mid-reply leaves its connection unusable: drop it.
                    self._drop_connection(connection.raw_connection)
                    raise
        except TimeoutError as exc:
            raise CatalogError(f"the lookup took longer than {timeout:g}s") from exc
        return self._document(row, values)

    def _drop_connection(self, raw: Any) -> None:
        try:
            if self.dialect == "postgresql":
                raw.terminate()
            elif self.dialect == "mysql":
                raw.close()
        except Exception as exc:  # already broken: nothing more to release
            logger.debug("catalog: dropping a timed-out connection failed: %s", exc)

    async def _ready_database(self) -> tuple[SQLDatabase, bool]:
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
            logger.info("catalog connected (%s)", self.dialect)
            return database, True

    async def _connect_and_check(self) -> SQLDatabase:
        if self.dialect == "sqlite" and not self.config.embedded:
            path = sqlite_file(self.config.url)
            if not Path(path).is_file():
                raise CatalogUnavailable(f"SQLite file {path} does not exist")
        database: SQLDatabase
        if self.dialect == "sqlite":
            # One long-lived read-only connection: see proxy.catalog.sqlite_reader for why.
            database = SQLiteReader(sqlite_file(self.config.url))
        else:
            database = Database(_database_url(self.config), **_driver_options(self.config))
        timeout = self.config.pool.connect_timeout
        try:
            await asyncio.wait_for(database.connect(), timeout)
        except TimeoutError as exc:
            raise CatalogUnavailable(f"no connection within {timeout:g}s") from exc
        except Exception as exc:
            raise CatalogUnavailable(_describe(exc)) from exc
        try:
            await self._check_mapping(database)
        except BaseException:
            await self._close(database)
            raise
        return database

    async def _check_mapping(self, database: SQLDatabase) -> None:
        key = "catalog.query" if self.config.query is not None else "catalog.table"
        try:
            async with asyncio.timeout(self.config.pool.query_timeout):
                values = {"document_id": None} if self.config.query is not None else None
                row = await database.fetch_one(probe_sql(self.config), values)
                # keys(), not iteration: a driver's row may iterate over its values.
                names = row.keys() if row is not None else []
                available = [str(name) for name in names]
                problems = mapping_problems(self.config, available)
                if not problems and isinstance(database, Database) and self.dialect == "postgresql":
                    # From the SQL as configured: a reconnect must not inspect the typed one.
                    postgres = await inspect_postgres_lookup(database, lookup_sql(self.config))
                    self._sql = lookup_sql(self.config, postgres.id_type)
                    if postgres.writers:
                        problems = [_writers_problem(postgres.writers)]
                if not problems:
                    # The real lookup, with an id that matches nothing, must run as well.
                    await database.fetch_one(self._sql, {"document_id": None})
        except TimeoutError as exc:
            raise CatalogUnavailable("checking the mapping timed out") from exc
        except Exception as exc:
            if _connection_lost(exc):
                raise CatalogUnavailable(_describe(exc)) from exc
            what = "catalog.query" if key == "catalog.query" else f'table "{self.config.table}"'
            raise CatalogMismatch([f"{key}: the database refused {what}: {exc}"]) from exc
        if problems:
            raise CatalogMismatch(problems)

    def _discard(self, database: SQLDatabase) -> None:
        """Forget a broken pool now; close it in the background (it may hang on dead sockets)."""
        if self._database is database:
            self._database = None
        task = asyncio.get_running_loop().create_task(self._close(database))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, database: SQLDatabase) -> None:
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
