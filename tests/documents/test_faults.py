"""Database and storage faults: the API's 500 messages, the cause in the log, nothing leaked."""

from __future__ import annotations

import os
import sqlite3

import httpx
import pytest

from tests.harness import assert_envelope, run_cli
from tests.samples import insert_document

DOWNLOAD_FAILED = "Failed to download document"
PRESIGN_FAILED = "Failed to generate download URL"


def both_endpoints(service, document_id: str) -> tuple[httpx.Response, httpx.Response]:
    auth = {"Authorization": f"Bearer {service.token()}"}
    posted = httpx.post(
        f"{service.base_url}/download", headers=auth, json={"document_id": document_id}
    )
    got = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    return posted, got


def assert_faulted(service, document_id: str, cause: str) -> None:
    posted, got = both_endpoints(service, document_id)
    assert_envelope(posted, 500, PRESIGN_FAILED)
    assert_envelope(got, 500, DOWNLOAD_FAILED)
    log = service.log()
    assert cause in log, log[-2000:]
    # The cause is the operator's business, not the client's.
    for response in (posted, got):
        assert cause not in response.text
        assert "Traceback" not in response.text


def test_catalog_table_dropped_while_running(make_service, tmp_path):
    """A table that disappears under a running service is a database fault (500, logged).

    A table missing at start is refused at start instead (tests/catalog/test_sql.py).
    """
    database = tmp_path / "operator.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE documents (id TEXT, file_path TEXT)")
    connection.close()
    service = make_service({"catalog": {"url": f"sqlite:///{database}", "embedded": False}})
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE documents")
    connection.close()
    assert_faulted(service, "any-id", "no such table")
    assert "catalog lookup of 'any-id' failed" in service.log()


def test_operator_sqlite_catalog_with_its_own_columns(make_service, tmp_path):
    """The control for the fault above: the same kind of catalog, with its table, works."""
    database = tmp_path / "operator.db"
    files = tmp_path / "files"
    files.mkdir()
    (files / "stored.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE docs (doc_id TEXT, path TEXT, title TEXT, team TEXT)")
        connection.execute("INSERT INTO docs VALUES ('op-1', 'stored.pdf', 'Operator doc', 'red')")
    connection.close()
    service = make_service(
        {
            "catalog": {
                "url": f"sqlite:///{database}",
                "embedded": False,
                "table": "docs",
                "columns": {"id": "doc_id", "file_path": "path", "name": "title",
                            "group": "team"},
            }
        }
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {service.token(group='red')}"}
    response = httpx.get(f"{service.base_url}/download/op-1", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="Operator doc.pdf"'
    blue = {"Authorization": f"Bearer {service.token(group='blue')}"}
    response = httpx.get(f"{service.base_url}/download/op-1", headers=blue)
    assert_envelope(response, 437, "Document not found")


def test_catalog_file_replaced_by_garbage(make_service, tmp_path):
    service = make_service()
    source = tmp_path / "doc.txt"
    source.write_bytes(b"before the fault")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "doc")
    auth = {"Authorization": f"Bearer {service.token()}"}
    assert httpx.get(f"{service.base_url}/download/doc", headers=auth).status_code == 200
    database = tmp_path / "docproxy.db"
    size = database.stat().st_size
    with database.open("r+b") as handle:  # same file, garbage bytes
        handle.write(os.urandom(size))
    assert_faulted(service, "doc", "catalog lookup of 'doc' failed")
    assert "DatabaseError" in service.log()


def test_storage_symlink_loop(make_service, tmp_path):
    service = make_service()
    files = tmp_path / "files"
    os.symlink("loop-b", files / "loop-a")
    os.symlink("loop-a", files / "loop-b")
    insert_document(tmp_path / "docproxy.db", "looped", file_path="loop-a", name="x.pdf")
    assert_faulted(service, "looped", "Too many levels of symbolic links")
    assert "storage failed on stat" in service.log()


def test_storage_root_missing(make_service, tmp_path):
    """The local root deleted under a running service: a missing object, not a crash."""
    service = make_service()
    source = tmp_path / "doc.txt"
    source.write_bytes(b"x")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "doc")
    for stored in (tmp_path / "files").iterdir():
        stored.unlink()
    (tmp_path / "files").rmdir()
    posted, got = both_endpoints(service, "doc")
    assert_envelope(posted, 437, "Document not found")
    assert_envelope(got, 437, "Document not found")


WRITE_ONLY_SYSFS = "/sys/bus/platform/uevent"


@pytest.mark.skipif(not os.path.exists(WRITE_ONLY_SYSFS), reason="needs Linux sysfs")
def test_file_that_cannot_be_opened(make_service, tmp_path):
    """A regular file that stat accepts and open refuses, even to root: a sysfs write-only
    attribute (opening it for reading is harmless). Nothing was sent yet, so the client gets
    the API's 500, not a 200 cut short."""
    service = make_service(
        {"storage": {"backends": {"local": {"root": os.path.dirname(WRITE_ONLY_SYSFS),
                                            "create_root": False}}}}
    )  # fmt: skip
    insert_document(tmp_path / "docproxy.db", "sysfs", file_path="uevent", name="u.txt")
    auth = {"Authorization": f"Bearer {service.token()}"}
    got = httpx.get(f"{service.base_url}/download/sysfs", headers=auth)
    assert_envelope(got, 500, DOWNLOAD_FAILED)
    assert "Permission denied" in service.log()
    assert "storage failed before the first byte" in service.log()
    assert "Permission denied" not in got.text


def test_unreadable_catalog_row(make_service, tmp_path):
    """A row the catalog returns but docproxy cannot read (size 'abc') is a database fault."""
    service = make_service()
    (tmp_path / "files" / "a.txt").write_bytes(b"a")
    with sqlite3.connect(tmp_path / "docproxy.db") as connection:
        connection.execute(
            "INSERT INTO documents (id, file_path, size) VALUES ('bad-size', 'a.txt', 'abc')"
        )
    connection.close()
    assert_faulted(service, "bad-size", "unusable row for 'bad-size'")


def test_missing_operator_sqlite_file_is_never_created(make_service, tmp_path):
    """docproxy only reads an operator's database: a wrong path is a fault, never a new file.

    Like any unreachable database, it does not stop start-up; requests get 500 until it exists.
    """
    absent = tmp_path / "absent.db"
    service = make_service({"catalog": {"url": f"sqlite:///{absent}", "embedded": False}})
    assert_faulted(service, "any-id", "absent.db")
    assert not absent.exists()
    assert "Traceback" not in service.log()
