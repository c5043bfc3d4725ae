"""The application's own database as the catalog: SQLite, PostgreSQL and MariaDB, over HTTP.

Every test runs against each real server with a database of its own (created and dropped here),
drives ``docproxy serve`` in a child process, and serves files from the local backend.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pymysql
import pytest

from tests.conftest import require_server
from tests.harness import REPO, assert_envelope, base_config, free_port, run_cli, write_config
from tests.sql_servers import DIALECTS, ScratchDatabase, reachable

SCHEMA = """
CREATE TABLE app_documents (
    doc_uuid VARCHAR(200) NOT NULL PRIMARY KEY,
    storage_key VARCHAR(500),
    title VARCHAR(300),
    mime VARCHAR(100),
    tenant VARCHAR(100),
    byte_size BIGINT,
    deleted_at TIMESTAMP NULL
)
"""
FILES_SCHEMA = """
CREATE TABLE app_files (
    file_id INTEGER NOT NULL PRIMARY KEY,
    document_ref VARCHAR(200) NOT NULL,
    object_path VARCHAR(500) NOT NULL
)
"""
MAPPING: dict[str, Any] = {
    "table": "app_documents",
    "columns": {
        "id": "doc_uuid",
        "file_path": "storage_key",
        "name": "title",
        "type": "mime",
        "group": "tenant",
        "size": "byte_size",
        "deleted": "deleted_at",
    },
}
INSERT = (
    "INSERT INTO app_documents (doc_uuid, storage_key, title, mime, tenant, byte_size)"
    " VALUES (:id, :key, :title, :mime, :tenant, :size)"
)
# Ids an attacker would try, and ids an application really has; each must be found exactly.
AWKWARD_IDS = [
    "x'; DROP TABLE app_documents; --",
    "' OR '1'='1",
    'double"quote',
    "back\\slash",
    "100%_like",
    "semi;colon",
    "dir/with/slash",
    "spaces in id",
    "ünïcødé-名前",
    "$1 :document_id ?",
]
MISSING_IDS = [
    "' OR 1=1 --",
    "x'; DELETE FROM app_documents; --",
    "%",
    "_",
    "*",
    "doc-0",
    "\\",
]


@contextlib.contextmanager
def scratch_database(dialect: str, workdir: Path) -> Iterator[ScratchDatabase]:
    database = ScratchDatabase(dialect, workdir)
    if database.admin_url is not None and (why := reachable(database.admin_url)):
        require_server(f"{dialect} server", why)
    database.create()
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture(params=DIALECTS)
def scratch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScratchDatabase]:
    with scratch_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture(params=("postgresql", "mysql"))
def server_scratch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScratchDatabase]:
    with scratch_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def pg_scratch(tmp_path: Path) -> Iterator[ScratchDatabase]:
    with scratch_database("postgresql", tmp_path) as database:
        yield database


def catalog(scratch: ScratchDatabase, **extra: Any) -> dict[str, Any]:
    return {"catalog": {"embedded": False, "url": scratch.url, **MAPPING, **extra}}


def add_document(
    scratch: ScratchDatabase,
    files: Path,
    document_id: str,
    content: bytes,
    *,
    title: str | None = "report.pdf",
    mime: str | None = "application/pdf",
    tenant: str | None = None,
    key: str | None = None,
) -> None:
    key = key or f"k-{abs(hash(document_id))}.bin"
    files.mkdir(parents=True, exist_ok=True)
    (files / key).write_bytes(content)
    values = {
        "id": document_id,
        "key": key,
        "title": title,
        "mime": mime,
        "tenant": tenant,
        "size": len(content),
    }
    scratch.run((INSERT, values))


def get(service: Any, document_id: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{service.base_url}/download/{quote(document_id, safe='')}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def presign(service: Any, document_id: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_mapped_table_with_other_column_names(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "doc-1", b"%PDF-1.4 one", title="Q3 report.pdf")
    add_document(
        scratch, tmp_path / "files", "doc-2", b"plain words", title="notes", mime="text/plain"
    )
    service = make_service(catalog(scratch))
    token = service.token()

    response = get(service, "doc-1", token)
    assert response.status_code == 200, response.text
    assert response.content == b"%PDF-1.4 one"
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="Q3 report.pdf"'
    assert response.headers["cache-control"] == "no-cache"

    response = get(service, "doc-2", token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'filename="notes.txt"' in response.headers["content-disposition"]

    link = presign(service, "doc-1", token)
    assert link.status_code == 200, link.text
    assert httpx.get(link.json()["data"]["download_url"]).content == b"%PDF-1.4 one"

    assert_envelope(get(service, "doc-3", token), 437, "Document not found")
    assert_envelope(presign(service, "doc-3", token), 437, "Document not found")
    # docproxy only read: the application's schema is exactly what the test made.
    assert scratch.tables() == {"app_documents"}


def test_soft_deleted_row_is_not_found(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "kept", b"kept")
    add_document(scratch, tmp_path / "files", "gone", b"gone")
    scratch.run("UPDATE app_documents SET deleted_at = CURRENT_TIMESTAMP WHERE doc_uuid = 'gone'")
    service = make_service(catalog(scratch))
    token = service.token()
    assert get(service, "kept", token).status_code == 200
    assert_envelope(get(service, "gone", token), 437, "Document not found")
    assert_envelope(presign(service, "gone", token), 437, "Document not found")


def test_group_column_enables_the_tenant_rule(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "acme-doc", b"acme only", tenant="acme")
    add_document(scratch, tmp_path / "files", "shared-doc", b"for all", tenant=None)
    service = make_service(catalog(scratch))

    acme, other, nobody = service.token(group="acme"), service.token(group="umbrella"), None
    assert get(service, "acme-doc", acme).content == b"acme only"
    assert_envelope(get(service, "acme-doc", other), 437, "Document not found")
    nobody = service.token()
    assert_envelope(get(service, "acme-doc", nobody), 437, "Document not found")
    assert_envelope(presign(service, "acme-doc", other), 437, "Document not found")
    for token in (acme, other, nobody):
        assert get(service, "shared-doc", token).content == b"for all"


def test_custom_query_with_a_join(scratch, make_service, tmp_path):
    scratch.run(SCHEMA, FILES_SCHEMA)
    add_document(scratch, tmp_path / "files", "joined", b"ignored", key="unused.bin")
    (tmp_path / "files" / "from-join.txt").write_bytes(b"found through the join")
    scratch.run(
        "INSERT INTO app_files (file_id, document_ref, object_path)"
        " VALUES (1, 'joined', 'from-join.txt')"
    )
    query = (
        "SELECT d.doc_uuid AS id, f.object_path AS file_path, d.title AS name,"
        " d.tenant AS owner, d.deleted_at AS removed"
        " FROM app_documents d JOIN app_files f ON f.document_ref = d.doc_uuid"
        " WHERE d.doc_uuid = :document_id"
    )
    overrides = {
        "catalog": {
            "embedded": False,
            "url": scratch.url,
            "query": query,
            "columns": {"name": "name", "group": "owner", "deleted": "removed"},
        }
    }
    service = make_service(overrides)
    token = service.token()
    response = get(service, "joined", token)
    assert response.status_code == 200, response.text
    assert response.content == b"found through the join"
    assert 'filename="report.pdf"' in response.headers["content-disposition"]
    assert_envelope(get(service, "no-such", token), 437, "Document not found")

    scratch.run("UPDATE app_documents SET deleted_at = CURRENT_TIMESTAMP")
    assert_envelope(get(service, "joined", token), 437, "Document not found")


def test_ids_with_quotes_and_sql_metacharacters(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    for index, document_id in enumerate(AWKWARD_IDS):
        add_document(scratch, tmp_path / "files", document_id, f"body {index}".encode())
    service = make_service(catalog(scratch))
    token = service.token()
    for index, document_id in enumerate(AWKWARD_IDS):
        response = get(service, document_id, token)
        assert response.status_code == 200, (document_id, response.text)
        assert response.content == f"body {index}".encode(), document_id
        assert presign(service, document_id, token).status_code == 200, document_id
    for document_id in MISSING_IDS:
        assert_envelope(get(service, document_id, token), 437, "Document not found")
        assert_envelope(presign(service, document_id, token), 437, "Document not found")
    rows = scratch.run("SELECT COUNT(*) AS n FROM app_documents")[0]
    assert rows[0]["n"] == len(AWKWARD_IDS)
    assert scratch.tables() == {"app_documents"}


def test_ten_thousand_rows(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    for start in range(0, 10_000, 1000):
        values = ", ".join(
            f"('row-{n:05d}', 'row-{n:05d}.txt', 'row {n}.txt', 'text/plain', NULL, 10)"
            for n in range(start, start + 1000)
        )
        scratch.run(
            "INSERT INTO app_documents (doc_uuid, storage_key, title, mime, tenant, byte_size)"
            f" VALUES {values}"
        )
    assert scratch.run("SELECT COUNT(*) AS n FROM app_documents")[0][0]["n"] == 10_000
    files = tmp_path / "files"
    files.mkdir()
    sample = [0, 1, 4999, 7777, 9999]
    for n in sample:
        (files / f"row-{n:05d}.txt").write_bytes(f"row {n:05d}".encode())
    service = make_service(catalog(scratch))
    token = service.token()
    for n in sample:
        response = get(service, f"row-{n:05d}", token)
        assert response.status_code == 200, response.text
        assert response.content == f"row {n:05d}".encode()
        assert f'filename="row {n}.txt"' in response.headers["content-disposition"]
    assert_envelope(get(service, "row-10000", token), 437, "Document not found")
    # A row whose object is absent from the store is not found, not a server fault.
    assert_envelope(get(service, "row-00002", token), 437, "Document not found")


def _config(tmp_path: Path, scratch: ScratchDatabase, **catalog_keys: Any) -> Path:
    config = base_config(tmp_path)
    config["catalog"] = {"embedded": False, "url": scratch.url, **catalog_keys}
    return write_config(tmp_path / f"config-{time.monotonic_ns()}.yaml", config)


def _serve_refused(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    return result


def test_mapping_checked_against_the_live_database(scratch, tmp_path):
    scratch.run(SCHEMA)
    good = _config(tmp_path, scratch, **MAPPING)
    result = run_cli(good, "check-config")
    assert "mapping matches the live database" in result.stdout

    wrong_columns = {**MAPPING["columns"], "name": "title_text", "size": "bytes"}
    bad = _config(tmp_path, scratch, table="app_documents", columns=wrong_columns)
    result = run_cli(bad, "check-config", check=False)
    assert result.returncode == 2, result
    expected_name = 'catalog.columns.name: column "title_text" not found in table "app_documents"'
    expected_size = 'catalog.columns.size: column "bytes" not found in table "app_documents"'
    assert expected_name in result.stderr
    assert expected_size in result.stderr
    refused = _serve_refused(bad)
    assert expected_name in refused.stderr

    no_table = _config(tmp_path, scratch, table="app_docs", columns=MAPPING["columns"])
    result = run_cli(no_table, "check-config", check=False)
    assert result.returncode == 2
    assert 'catalog.table: the database refused table "app_docs"' in result.stderr
    assert "app_docs" in _serve_refused(no_table).stderr

    query = (
        "SELECT doc_uuid AS id, storage_key AS file_path FROM app_documents"
        " WHERE doc_uuid = :document_id"
    )
    bad_query = _config(tmp_path, scratch, query=query, columns={"name": "title"})
    result = run_cli(bad_query, "check-config", check=False)
    assert result.returncode == 2
    assert (
        'catalog.columns.name: column "title" not found in the result of catalog.query'
        in result.stderr
    )
    broken_query = _config(tmp_path, scratch, query="SELECT * FROM nowhere WHERE id = :document_id")
    result = run_cli(broken_query, "check-config", check=False)
    assert result.returncode == 2
    assert "catalog.query: the database refused catalog.query" in result.stderr
    assert scratch.tables() == {"app_documents"}


def test_database_down_at_start_gives_500_and_a_warning(make_service, tmp_path):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    config = base_config(tmp_path)
    config["catalog"] = {"embedded": False, "url": dead, **MAPPING}
    path = write_config(tmp_path / "dead.yaml", config)
    result = run_cli(path, "check-config", check=False)
    assert result.returncode == 1
    assert "catalog.url: cannot reach the database" in result.stderr

    service = make_service(
        {"catalog": {"embedded": False, "url": dead, **MAPPING, "pool": {"retry_interval": 0}}}
    )
    token = service.token()
    assert_envelope(get(service, "doc-1", token), 500, "Failed to download document")
    assert_envelope(presign(service, "doc-1", token), 500, "Failed to generate download URL")
    log = service.log()
    assert "catalog database unavailable at start" in log
    assert "catalog lookup of 'doc-1' failed" in log


def test_missing_sqlite_file_is_never_created(make_service, tmp_path):
    missing = tmp_path / "app" / "missing.db"
    overrides = {"catalog": {"embedded": False, "url": f"sqlite:///{missing}", **MAPPING}}
    service = make_service(overrides)
    assert_envelope(get(service, "doc-1", service.token()), 500, "Failed to download document")
    assert not missing.exists()
    assert not missing.parent.exists()


def kill_sessions(scratch: ScratchDatabase) -> int:
    """Kill the server sessions on this test's own database (its name is unique); how many."""
    if scratch.dialect == "postgresql":
        rows = scratch.run(
            (
                "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()",
                {"db": scratch.name},
            )
        )[0]
        return len(rows)
    sessions = scratch.run(
        (
            "SELECT id FROM information_schema.processlist"
            " WHERE db = :db AND id <> CONNECTION_ID()",
            {"db": scratch.name},
        )
    )[0]
    killed = 0
    for row in sessions:
        try:
            scratch.run(f"KILL {int(row['id'])}")
        except pymysql.err.OperationalError as exc:
            # 1094, unknown thread id: the session ended between the listing and the KILL.
            if exc.args[0] != 1094:
                raise
        else:
            killed += 1
    return killed


def test_connections_killed_by_the_server_are_replaced(server_scratch, make_service, tmp_path):
    scratch = server_scratch
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "doc-1", b"survives")
    add_document(scratch, tmp_path / "files", "slowish", b"took a while")
    sleep = "pg_sleep(1)::text" if scratch.dialect == "postgresql" else "SLEEP(1)"
    query = (
        "SELECT doc_uuid AS id, storage_key AS file_path,"
        f" CASE WHEN doc_uuid = 'slowish' THEN {sleep} ELSE NULL END AS pause"
        " FROM app_documents WHERE doc_uuid = :document_id"
    )
    pool = {"min_size": 2, "max_size": 2}
    overrides = {"catalog": {"embedded": False, "url": scratch.url, "query": query, "pool": pool}}
    service = make_service(overrides)
    token = service.token()
    assert get(service, "doc-1", token).content == b"survives"

    # Idle connections killed: the pool notices and opens new ones.
    assert kill_sessions(scratch) >= 1
    for _ in range(3):
        response = get(service, "doc-1", token)
        assert response.status_code == 200, response.text
        assert response.content == b"survives"

    # Killed in the middle of a lookup: the lookup is retried once on a new connection.
    with concurrent.futures.ThreadPoolExecutor(1) as pool_executor:
        pending = pool_executor.submit(get, service, "slowish", token)
        time.sleep(0.4)  # the lookup is now in its one-second sleep on a pooled connection
        assert kill_sessions(scratch) >= 1
        response = pending.result(timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == b"took a while"
    assert "catalog connection lost" in service.log()


def test_metadata_cache_serves_a_row_no_longer_than_its_ttl(scratch, make_service, tmp_path):
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "hot", b"hot", title="first.pdf")
    service = make_service(catalog(scratch, cache={"ttl": 1.5, "max_entries": 100}))
    token = service.token()
    assert 'filename="first.pdf"' in get(service, "hot", token).headers["content-disposition"]
    changed_at = time.monotonic()
    scratch.run("UPDATE app_documents SET title = 'second.pdf', deleted_at = CURRENT_TIMESTAMP")
    # Within the ttl the cached row may be served; past it, the database's answer must be.
    response = get(service, "hot", token)
    if time.monotonic() - changed_at < 1.0:
        assert response.status_code == 200
        assert 'filename="first.pdf"' in response.headers["content-disposition"]
    time.sleep(max(0.0, 1.6 - (time.monotonic() - changed_at)))
    assert_envelope(get(service, "hot", token), 437, "Document not found")

    # "Not found" is never cached: a row inserted now is served at once.
    assert_envelope(get(service, "new", token), 437, "Document not found")
    add_document(scratch, tmp_path / "files", "new", b"fresh")
    assert get(service, "new", token).content == b"fresh"


def test_typed_id_columns_answer_437_for_ids_of_the_wrong_shape(pg_scratch, make_service, tmp_path):
    pg_scratch.run(
        "CREATE TABLE by_number (n BIGINT PRIMARY KEY, path TEXT)",
        "CREATE TABLE by_uuid (u UUID PRIMARY KEY, path TEXT)",
        "INSERT INTO by_number VALUES (42, 'n.txt')",
        "INSERT INTO by_uuid VALUES ('550e8400-e29b-41d4-a716-446655440000', 'u.txt')",
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "n.txt").write_bytes(b"number")
    (tmp_path / "files" / "u.txt").write_bytes(b"uuid")
    url = pg_scratch.url
    number = make_service(
        {"catalog": {"embedded": False, "url": url, "table": "by_number",
                     "columns": {"id": "n", "file_path": "path"}}}
    )  # fmt: skip
    token = number.token()
    assert get(number, "42", token).content == b"number"
    for wrong in ("abc", "x'; DROP TABLE by_number; --", "99999999999999999999999", "4.2"):
        assert_envelope(get(number, wrong, token), 437, "Document not found")

    by_uuid = make_service(
        {"catalog": {"embedded": False, "url": url, "table": "by_uuid",
                     "columns": {"id": "u", "file_path": "path"}}}
    )  # fmt: skip
    token = by_uuid.token()
    assert get(by_uuid, "550e8400-e29b-41d4-a716-446655440000", token).content == b"uuid"
    assert_envelope(get(by_uuid, "doc-123", token), 437, "Document not found")
    assert pg_scratch.tables() == {"by_number", "by_uuid"}


# Ids that are not the number 42, whatever a server's string-to-number conversion makes of them.
NOT_FORTY_TWO = ["abc", "42abc", "4.2", "4.2e1", "x'; DROP TABLE by_number; --", "9" * 23]
# The README's custom query for an integer id column, per server.
INTEGER_ID_QUERIES = {
    "postgresql": "SELECT n AS id, path AS file_path FROM by_number"
    " WHERE n = CAST(:document_id AS bigint)",
    "mysql": "SELECT n AS id, path AS file_path FROM by_number"
    " WHERE n = :document_id AND CAST(n AS CHAR) = :document_id",
}


def _numbered_documents(scratch: ScratchDatabase, files: Path) -> None:
    scratch.run(
        "CREATE TABLE by_number (n BIGINT NOT NULL PRIMARY KEY, path VARCHAR(100))",
        "INSERT INTO by_number VALUES (0, 'zero.txt')",
        "INSERT INTO by_number VALUES (42, 'n.txt')",
    )
    files.mkdir()
    (files / "zero.txt").write_bytes(b"zero")
    (files / "n.txt").write_bytes(b"number")


def test_integer_id_column_is_found_by_its_number_only(scratch, make_service, tmp_path):
    # MySQL turns '42abc' into 42 and 'abc' into 0 when comparing with a number.
    _numbered_documents(scratch, tmp_path / "files")
    service = make_service(
        {"catalog": {"embedded": False, "url": scratch.url, "table": "by_number",
                     "columns": {"id": "n", "file_path": "path"}}}
    )  # fmt: skip
    token = service.token()
    assert get(service, "42", token).content == b"number"
    assert get(service, "0", token).content == b"zero"
    for wrong in [*NOT_FORTY_TWO, "042", "+42", " 42"]:
        assert_envelope(get(service, wrong, token), 437, "Document not found")
        assert_envelope(presign(service, wrong, token), 437, "Document not found")
    assert " ERROR " not in service.log()


def test_custom_query_recipe_for_an_integer_id(server_scratch, make_service, tmp_path):
    scratch = server_scratch
    _numbered_documents(scratch, tmp_path / "files")
    queries = [INTEGER_ID_QUERIES[scratch.dialect]]
    if scratch.dialect == "postgresql":
        # Without the CAST, PostgreSQL infers bigint for the id all the same.
        queries.append("SELECT n AS id, path AS file_path FROM by_number WHERE n = :document_id")
    for query in queries:
        service = make_service({"catalog": {"embedded": False, "url": scratch.url, "query": query}})
        token = service.token()
        assert get(service, "42", token).content == b"number", query
        assert get(service, "0", token).content == b"zero", query
        for wrong in NOT_FORTY_TWO:
            assert_envelope(get(service, wrong, token), 437, "Document not found")
        assert " ERROR " not in service.log()


def test_integer_id_is_still_cast_after_a_reconnect(pg_scratch, make_service, tmp_path):
    _numbered_documents(pg_scratch, tmp_path / "files")
    query = (
        "SELECT n AS id, path AS file_path, CASE WHEN n = 0 THEN pg_sleep(1)::text END AS pause"
        " FROM by_number WHERE n = :document_id"
    )
    service = make_service({"catalog": {"embedded": False, "url": pg_scratch.url, "query": query}})
    token = service.token()
    with concurrent.futures.ThreadPoolExecutor(1) as pool_executor:
        pending = pool_executor.submit(get, service, "0", token)
        time.sleep(0.4)  # the lookup is now in its one-second sleep on a pooled connection
        assert kill_sessions(pg_scratch) >= 1
        response = pending.result(timeout=30)
    # Retried on a new pool, checked again: the id is still bound as text and cast.
    assert "catalog connection lost" in service.log()
    assert response.status_code == 200, response.text
    assert response.content == b"zero"
    assert get(service, "42", token).content == b"number"


# Per server: a sequence, a function that writes and one that only reads, and the calls to them.
WRITERS_SETUP = {
    "postgresql": [
        "CREATE SEQUENCE lookups",
        "CREATE TABLE hits (id VARCHAR(200))",
        "CREATE FUNCTION count_hit(t text) RETURNS text LANGUAGE plpgsql"
        " AS $$ BEGIN INSERT INTO hits VALUES (t); RETURN t; END $$",
        "CREATE FUNCTION title_of(t text) RETURNS text LANGUAGE plpgsql STABLE"
        " AS $$ BEGIN RETURN (SELECT title FROM app_documents WHERE doc_uuid = t); END $$",
    ],
    "mysql": [
        "CREATE SEQUENCE lookups",
        "CREATE TABLE hits (id VARCHAR(200))",
        "CREATE FUNCTION count_hit(t VARCHAR(200)) RETURNS VARCHAR(200) MODIFIES SQL DATA"
        " BEGIN INSERT INTO hits VALUES (t); RETURN t; END",
        "CREATE FUNCTION title_of(t VARCHAR(200)) RETURNS VARCHAR(300) READS SQL DATA"
        " RETURN (SELECT title FROM app_documents WHERE doc_uuid = t)",
    ],
}
NEXT_VALUE = {"postgresql": "nextval('lookups')", "mysql": "NEXTVAL(lookups)"}


def test_a_query_that_writes_is_refused_by_the_check(server_scratch, make_service, tmp_path):
    # With no row matching, the lookup the check runs never calls the function; PostgreSQL
    # would only refuse it at the first real lookup (500 for every document).
    scratch = server_scratch
    scratch.run(SCHEMA, *WRITERS_SETUP[scratch.dialect])
    add_document(scratch, tmp_path / "files", "doc-1", b"body", title="read.pdf")
    lookup = "SELECT doc_uuid AS id, storage_key AS file_path, {} AS extra FROM app_documents"
    lookup += " WHERE doc_uuid = :document_id"
    for call, named in (
        (NEXT_VALUE[scratch.dialect], "nextval"),
        ("count_hit(doc_uuid)", "count_hit"),
    ):
        config = _config(tmp_path, scratch, query=lookup.format(call))
        result = run_cli(config, "check-config", check=False)
        assert result.returncode == 2, result
        assert "catalog.query:" in result.stderr
        if scratch.dialect == "postgresql":
            assert named in result.stderr
            assert "read-only" in result.stderr
        else:
            assert "READ ONLY" in result.stderr
        assert "catalog.query:" in _serve_refused(config).stderr

    # A function that only reads is accepted.
    reads = _config(tmp_path, scratch, query=lookup.format("title_of(doc_uuid)"))
    assert "mapping matches the live database" in run_cli(reads, "check-config").stdout
    service = make_service(
        {"catalog": {"embedded": False, "url": scratch.url,
                     "query": lookup.format("title_of(doc_uuid)")}}
    )  # fmt: skip
    assert get(service, "doc-1", service.token()).content == b"body"
    assert scratch.run("SELECT COUNT(*) AS n FROM hits")[0][0]["n"] == 0


def test_postgres_session_is_read_only(pg_scratch, make_service, tmp_path):
    # A function labelled as safe that writes all the same gets past the check: the read-only
    # session refuses the write, so the request fails and nothing in the database changes.
    pg_scratch.run(
        SCHEMA,
        "CREATE SEQUENCE hits",
        "CREATE FUNCTION mislabelled() RETURNS bigint LANGUAGE plpgsql PARALLEL SAFE"
        " AS $$ BEGIN RETURN nextval('hits'); END $$",
    )
    add_document(pg_scratch, tmp_path / "files", "doc-1", b"body")
    query = (
        "SELECT doc_uuid AS id, storage_key AS file_path, mislabelled() AS hit"
        " FROM app_documents WHERE doc_uuid = :document_id"
    )
    service = make_service({"catalog": {"embedded": False, "url": pg_scratch.url, "query": query}})
    assert_envelope(get(service, "doc-1", service.token()), 500, "Failed to download document")
    assert "read-only transaction" in service.log()
    assert pg_scratch.run("SELECT last_value, is_called FROM hits")[0][0]["is_called"] is False


def test_a_slow_lookup_times_out_and_leaves_the_pool_usable(server_scratch, make_service, tmp_path):
    scratch = server_scratch
    scratch.run(SCHEMA)
    add_document(scratch, tmp_path / "files", "fast", b"quick")
    add_document(scratch, tmp_path / "files", "slow", b"never sent")
    sleep = "pg_sleep(3)::text" if scratch.dialect == "postgresql" else "SLEEP(3)"
    query = (
        "SELECT doc_uuid AS id, storage_key AS file_path,"
        f" CASE WHEN doc_uuid = 'slow' THEN {sleep} ELSE NULL END AS pause"
        " FROM app_documents WHERE doc_uuid = :document_id"
    )
    pool = {"min_size": 1, "max_size": 1, "query_timeout": 0.5}
    overrides = {"catalog": {"embedded": False, "url": scratch.url, "query": query, "pool": pool}}
    service = make_service(overrides)
    token = service.token()
    assert_envelope(get(service, "slow", token), 500, "Failed to download document")
    # The one pooled connection was cut off mid-query; later lookups get a clean one.
    for _ in range(3):
        response = get(service, "fast", token)
        assert response.status_code == 200, response.text
        assert response.content == b"quick"
    log = service.log()
    assert "canceling statement due to statement timeout" in log or "longer than 0.5s" in log
