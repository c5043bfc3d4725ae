"""catalog.* config: parsed once, every problem named by key; the SQL docproxy builds from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.catalog.document import Document
from proxy.catalog.guard import read_only_query_problem
from proxy.catalog.lookup import MetadataCache
from proxy.catalog.settings import CacheConfig, CatalogConfig, ColumnMap
from proxy.catalog.sql import lookup_sql, mapping_problems, probe_sql
from proxy.config.settings import ConfigError, parse_settings
from tests.harness import base_config, run_cli, write_config


def settings_with(tmp_path: Path, catalog: dict[str, Any]) -> Any:
    config = base_config(tmp_path)
    config["catalog"] = catalog
    return parse_settings(config)


def problems(tmp_path: Path, catalog: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, catalog)
    return caught.value.problems


PG = "postgresql://app:${APP_DB_PASSWORD:-pw}@db.internal:5432/app"


def test_mapping_and_pool_and_cache_are_parsed(tmp_path, monkeypatch):
    monkeypatch.setenv("APP_DB_PASSWORD", "s3cret")
    settings = settings_with(
        tmp_path,
        {
            "url": PG,
            "table": "public.app_documents",
            "columns": {"id": "doc_uuid", "file_path": "storage_key", "deleted": "deleted_at"},
            "pool": {"min_size": 0, "max_size": 3, "connect_timeout": 2, "query_timeout": 0.5},
            "cache": {"ttl": 30, "max_entries": 500},
        },
    )
    catalog = settings.catalog
    assert catalog.url == "postgresql://app:s3cret@db.internal:5432/app"
    assert catalog.table == "public.app_documents"
    assert catalog.columns.deleted == "deleted_at"
    assert (catalog.pool.min_size, catalog.pool.max_size) == (0, 3)
    assert catalog.pool.query_timeout == 0.5
    assert catalog.cache == CacheConfig(ttl=30.0, max_entries=500)
    assert settings_with(tmp_path, {"url": PG}).catalog.cache.ttl == 0  # off by default


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///./app.db",
        "postgres://u@h/db",
        "postgresql+asyncpg://u@h/db",
        "mysql://u@h/db",
        "mysql+aiomysql://u@h/db",
        "sqlite+aiosqlite:////srv/app.db",
    ],
)
def test_supported_urls(tmp_path, url):
    assert settings_with(tmp_path, {"url": url}).catalog.url == url


def test_problems_are_named_by_key(tmp_path):
    found = problems(
        tmp_path,
        {
            "url": "oracle://u@h/db",
            "table": "documents; DROP TABLE x",
            "columns": {"name": "title text", "group": "a.b", "colour": "x"},
            "pool": {"min_size": 5, "max_size": 2, "query_timeout": 0},
            "cache": {"ttl": -1, "max_entries": 0},
        },
    )
    text = "\n".join(found)
    assert "catalog.url: must be a sqlite:///path" in text and "'oracle'" in text
    assert "catalog.table: must be schema.table or table" in text
    assert "catalog.columns.name: must be a plain column name" in text
    assert "catalog.columns.group: must be a plain column name" in text
    assert "catalog.columns.colour: unknown key" in text
    assert "catalog.pool.min_size: must not exceed max_size (5 > 2)" in text
    assert "catalog.pool.query_timeout: must be at least 0.1" in text
    assert "catalog.cache.ttl: must be at least 0" in text
    assert "catalog.cache.max_entries: must be at least 1" in text


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("DELETE FROM t WHERE id = :document_id", "must be a read-only SELECT (it starts with"),
        ("SELECT * FROM t WHERE id = :document_id; DROP TABLE t", "must be one statement"),
        ("UPDATE t SET a = 1 WHERE id = :document_id", "must be a read-only SELECT"),
        (
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone WHERE id = :document_id",
            "found DELETE",
        ),
        ("SELECT * INTO t2 FROM t WHERE id = :document_id", "found INTO"),
        ("SELECT * FROM t WHERE id = :document_id FOR UPDATE", "found UPDATE"),
        ("SELECT * FROM t WHERE id = 'doc-1'", "must use the :document_id parameter"),
        ("SELECT * FROM t -- WHERE id = :document_id", "must use the :document_id parameter"),
        ("SELECT * FROM t WHERE id = :document_id AND g = :group", "only :document_id"),
    ],
)
def test_query_that_is_not_one_read_only_select_is_refused(tmp_path, query, expected):
    found = problems(tmp_path, {"url": PG, "query": query})
    assert any(p.startswith("catalog.query: ") and expected in p for p in found), found


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t WHERE id = :document_id",
        "select d.id, f.path AS file_path from d join f on f.d = d.id where d.id = :document_id;",
        "SELECT 'a;b -- DROP' AS note, id::text AS id FROM t WHERE id = CAST(:document_id AS int)",
        "WITH x AS (SELECT * FROM t) SELECT * FROM x WHERE x.id = :document_id",
        "SELECT replace(name, ' ', '_') AS name FROM t WHERE id = :document_id",
    ],
)
def test_read_only_queries_are_accepted(query):
    assert read_only_query_problem(query) is None


def test_query_and_table_together_are_refused(tmp_path):
    found = problems(
        tmp_path, {"url": PG, "table": "docs", "query": "SELECT * FROM d WHERE id = :document_id"}
    )
    assert found == ["catalog.table: not used with catalog.query: give a table mapping or a query"]


def test_check_config_names_a_bad_query_without_touching_a_database(tmp_path):
    config = base_config(tmp_path)
    config["catalog"] = {"url": PG, "query": "DROP TABLE documents"}
    result = run_cli(write_config(tmp_path / "c.yaml", config), "check-config", check=False)
    assert result.returncode == 2
    assert "catalog.query: must be a read-only SELECT (it starts with 'DROP')" in result.stderr


def test_lookup_sql_quotes_identifiers_and_binds_the_id():
    columns = ColumnMap(id="doc_uuid", file_path="storage_key", name="title")
    for url, q in (("postgresql://h/d", '"'), ("mysql://h/d", "`"), ("sqlite:///x.db", '"')):
        config = CatalogConfig(url=url, table="app.documents", columns=columns)
        sql = lookup_sql(config)
        assert f"FROM {q}app{q}.{q}documents{q}" in sql
        assert sql.endswith(f"WHERE {q}doc_uuid{q} = :document_id")
        assert f"{q}title{q} AS {q}doc_name{q}" in sql
        assert "LEFT JOIN" in probe_sql(config) and "ON 1 = 0" in probe_sql(config)
    typed = lookup_sql(CatalogConfig(url="postgresql://h/d", columns=columns), "bigint")
    assert typed.endswith('"doc_uuid" = CAST(CAST(:document_id AS text) AS bigint)')
    query = "SELECT n AS id, p AS file_path FROM t WHERE n = :document_id OR m = :document_id"
    custom = CatalogConfig(url="postgresql://h/d", query=query)
    assert lookup_sql(custom) == query
    assert lookup_sql(custom, "bigint").endswith(
        "WHERE n = CAST(CAST(:document_id AS text) AS bigint)"
        " OR m = CAST(CAST(:document_id AS text) AS bigint)"
    )


def test_mapping_problems_name_the_key_and_the_column():
    config = CatalogConfig(
        url="mysql://h/d",
        table="app_documents",
        columns=ColumnMap(id="DOC_UUID", file_path="storage_key", name="title"),
    )
    found = mapping_problems(config, ["doc_uuid", "storage_key", "mime"])
    # MySQL column names are case-insensitive; a missing one is named with its key.
    assert found == [
        'catalog.columns.name: column "title" not found in table "app_documents"'
        " (it has: doc_uuid, storage_key, mime)"
    ]
    pg = CatalogConfig(url="postgresql://h/d", table="t", columns=ColumnMap(id="ID"))
    assert (
        'catalog.columns.id: column "ID" not found' in mapping_problems(pg, ["id", "file_path"])[0]
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_never_serves_a_row_older_than_its_ttl():
    clock = FakeClock()
    cache = MetadataCache(CacheConfig(ttl=10, max_entries=100), clock=clock)
    document = Document(id="a", file_path="a.txt")
    cache.put("a", document)
    clock.now += 9.99
    assert cache.get("a") is document
    clock.now += 0.01
    assert cache.get("a") is None
    assert len(cache) == 0


def test_cache_evicts_the_least_recently_used_past_max_entries():
    clock = FakeClock()
    cache = MetadataCache(CacheConfig(ttl=60, max_entries=2), clock=clock)
    for name in ("a", "b"):
        cache.put(name, Document(id=name, file_path=name))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", Document(id="c", file_path="c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
