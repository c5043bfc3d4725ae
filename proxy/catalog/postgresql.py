"""PostgreSQL through asyncpg: a read-only session, and a look-up checked against the plan.

Names are case-sensitive once quoted. A custom query's ``:document_id`` is typed by
PostgreSQL, and asyncpg will not send a ``str`` as a number: the look-up then binds it as text
and casts it. PostgreSQL calls a function only for the rows it reads, so a query calling one
that writes is found in its generic plan, at start, instead of failing every look-up.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar

from proxy.catalog.dialect import DOCUMENT_ID, Connection, Dialect, pool_options
from proxy.catalog.errors import describe
from proxy.catalog.pooled import PooledDatabase
from proxy.catalog.settings import CatalogConfig

# Types the bound text id is compared as without a cast (regtype names).
_TEXT_TYPES = ("text", "character varying", "character", "name", "citext", "unknown")

_STATEMENT = "docproxy_lookup"
# In EXPLAIN's deparsed expressions: a function call (schema-qualified when not on the search
# path), or a quoted name or a literal, skipped so that nothing inside them counts as a call.
_NAME = r'"(?:[^"]|"")+"|[a-z_][a-z0-9_]*'
_TOKEN = re.compile(
    rf"(?:(?P<schema>{_NAME})\.)?(?P<name>{_NAME})\("
    r"""|"(?:[^"]|"")*"|'(?:[^']|'')*'"""
)
# PostgreSQL requires a function that writes to be VOLATILE and PARALLEL UNSAFE.
_WRITERS = """
SELECT DISTINCT p.oid::regprocedure::text AS writer
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN unnest($1::text[], $2::text[]) AS called(schema_name, function_name)
  ON p.proname = called.function_name
WHERE p.provolatile = 'v' AND p.proparallel = 'u'
  AND (n.nspname = called.schema_name
       OR (called.schema_name = '' AND pg_function_is_visible(p.oid)))
ORDER BY 1
"""


class PostgreSQL(Dialect):
    name: ClassVar[str] = "postgresql"
    case_sensitive_names: ClassVar[bool] = True

    def open(self, config: CatalogConfig) -> Connection:
        _keep_pool_errors_to_one_line()
        options = {
            **pool_options(config.pool),
            "timeout": config.pool.connect_timeout,
            "server_settings": {
                "default_transaction_read_only": "on",
                "statement_timeout": str(int(config.pool.query_timeout * 1000)),
                "application_name": "docproxy",
            },
        }
        return PooledDatabase(self, config, options, drop=lambda raw: raw.terminate())

    def connection_lost(self, exc: BaseException) -> bool:
        import asyncpg

        return super().connection_lost(exc) or isinstance(
            exc,
            asyncpg.InterfaceError
            | asyncpg.PostgresConnectionError
            | asyncpg.CannotConnectNowError
            | asyncpg.OperatorInterventionError,
        )

    def id_cannot_exist(self, exc: BaseException) -> bool:
        """PostgreSQL, unlike MySQL and SQLite, refuses ``'abc'`` for an integer or uuid id."""
        import asyncpg

        return (
            super().id_cannot_exist(exc)
            or type(exc) is asyncpg.DataError
            or isinstance(
                exc,
                asyncpg.InvalidTextRepresentationError
                | asyncpg.NumericValueOutOfRangeError
                | asyncpg.CharacterNotInRepertoireError
                | asyncpg.UntranslatableCharacterError,
            )
        )

    async def prepare_lookup(
        self, connection: Connection, lookup: Callable[[str | None], str]
    ) -> tuple[str, list[str]]:
        # From the SQL as configured: a reconnect must not inspect the typed one.
        assert isinstance(connection, PooledDatabase)
        id_type, writers = await _inspect(connection, lookup(None))
        problems = [_writers_problem(writers)] if writers else []
        return lookup(id_type), problems


async def _inspect(pool: PooledDatabase, sql: str) -> tuple[str | None, list[str]]:
    """Prepare the look-up in a read-only transaction and read its generic plan: the id's type
    (None for a text type) and the functions it calls that may write."""
    async with pool.database.connection() as connection:
        raw = connection.raw_connection
        async with raw.transaction(readonly=True):
            await raw.execute(f"PREPARE {_STATEMENT} AS {DOCUMENT_ID.sub('$1', sql)}")
            await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            types = await raw.fetchval(
                "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = $1",
                _STATEMENT,
            )
            plan = await raw.fetchval(f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {_STATEMENT}(NULL)")
            await raw.execute(f"DEALLOCATE {_STATEMENT}")
            calls = _called_functions(json.loads(plan))
            writers: list[str] = []
            if calls:
                schemas, names = zip(*sorted(calls), strict=True)
                rows = await raw.fetch(_WRITERS, list(schemas), list(names))
                writers = [row["writer"] for row in rows]
    id_type = types[0]
    bare_type = id_type.rsplit(".", 1)[-1].strip('"')
    return None if bare_type in _TEXT_TYPES else id_type, writers


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
        for match in _TOKEN.finditer(plan)
        if match["name"] is not None
    }


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _writers_problem(writers: list[str]) -> str:
    return (
        f"catalog.query: calls {', '.join(writers)}, which PostgreSQL lets write to the database"
        " (VOLATILE and PARALLEL UNSAFE); docproxy's session is read-only, so every lookup"
        " would fail. Declare a function that only reads STABLE"
    )


class _OneLineErrors(logging.Filter):
    """asyncpg's pool logs a traceback each time it cannot restore its floor while the database
    is down; docproxy already logs that outage, so keep it to one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {describe(record.exc_info[1])}"
            record.args = ()
            record.exc_info = None
        return True


def _keep_pool_errors_to_one_line() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLineErrors) for f in pool_log.filters):
        pool_log.addFilter(_OneLineErrors())
