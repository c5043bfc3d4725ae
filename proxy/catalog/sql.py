"""The SQL docproxy writes from the mapping: the look-up, the probe, and what the probe tells."""

from __future__ import annotations

from proxy.catalog.dialect import DOCUMENT_ID
from proxy.catalog.document import FIELDS
from proxy.catalog.registry import dialect_of
from proxy.catalog.settings import CatalogConfig


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
        return DOCUMENT_ID.sub(parameter, config.query)
    quote = dialect_of(config.url).quote
    selected = [
        f"{quote(column)} AS {quote('doc_' + field)}"
        for field in FIELDS
        if (column := getattr(config.columns, field)) is not None
    ]
    return (
        f"SELECT {', '.join(selected)} FROM {quote(config.table)} "
        f"WHERE {quote(config.columns.id)} = {parameter}"
    )


def probe_sql(config: CatalogConfig) -> str:
    """One all-NULL row whose keys are the table's (or the query's) column names.

    The outer join on a false condition returns exactly one row on every dialect, so the
    column names come back through ``databases`` without driver-specific metadata calls.
    """
    if config.query is not None:
        source = f"({config.query})"
    else:
        source = dialect_of(config.url).quote(config.table)
    return f"SELECT probe.* FROM (SELECT 1 AS one) AS anchor LEFT JOIN {source} AS probe ON 1 = 0"


def mapping_problems(config: CatalogConfig, available: list[str]) -> list[str]:
    """Each mapped column missing from ``available``, named by its config key."""
    if config.query is not None:
        # Result keys are looked up as written, so the names must match exactly.
        present = set(available)
        where = "the result of catalog.query"

        def fold(name: str) -> str:
            return name
    else:
        fold = dialect_of(config.url).fold
        present = {fold(name) for name in available}
        where = f'table "{config.table}"'
    return [
        f'catalog.columns.{field}: column "{column}" not found in {where}'
        f" (it has: {', '.join(available) or 'no columns'})"
        for field in FIELDS
        if (column := getattr(config.columns, field)) is not None and fold(column) not in present
    ]
