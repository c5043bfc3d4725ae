"""The SQLite reader: its row cache never serves a row another connection has changed, and a
locked file is waited for off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from proxy.catalog.lookup import Catalog
from proxy.catalog.settings import CatalogConfig, ColumnMap
from proxy.catalog.sqlite_reader import SQLiteReader

QUERY = "SELECT v FROM d WHERE id = :document_id"


def make_db(path: Path, journal_mode: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode={journal_mode}")
        db.execute("CREATE TABLE d (id TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO d VALUES ('x', 'one')")
    db.close()


def reader_on_new_db(path: Path, journal_mode: str = "delete") -> SQLiteReader:
    make_db(path, journal_mode)
    return SQLiteReader(str(path))


def commit_once(path: Path, sql: str, *params: str) -> None:
    """One change on a short-lived connection, as ``docproxy documents add`` makes it."""
    with sqlite3.connect(path) as db:
        db.execute(sql, params)
    db.close()


async def value(reader: SQLiteReader, document_id: str = "x") -> str | None:
    row = await reader.fetch_one(QUERY, {"document_id": document_id})
    return None if row is None else row["v"]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
async def test_changes_by_another_connection_are_seen_at_once(tmp_path, journal_mode):
    path = tmp_path / "c.db"
    reader = reader_on_new_db(path, journal_mode)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        assert await value(reader) == "one"
        assert await value(reader) == "one"  # a hit
        assert len(reader.cache) == 1
        writer.execute("UPDATE d SET v = 'two' WHERE id = 'x'")
        assert await value(reader) == "two"
        assert await value(reader, "y") is None  # "no row" is cached too...
        writer.execute("INSERT INTO d VALUES ('y', 'new')")
        assert await value(reader, "y") == "new"  # ...and forgotten on the insert
        writer.execute("DELETE FROM d WHERE id = 'x'")
        assert await value(reader) is None
        # Many commits in a row, each read back at once.
        for i in range(20):
            writer.execute("UPDATE d SET v = ? WHERE id = 'y'", (f"v{i}",))
            assert await value(reader, "y") == f"v{i}"
        # An explicit transaction is seen only once committed, and then at once.
        writer.execute("BEGIN")
        writer.execute("UPDATE d SET v = 'pending' WHERE id = 'y'")
        if journal_mode == "wal":
            assert await value(reader, "y") == "v19"
        writer.execute("COMMIT")
        assert await value(reader, "y") == "pending"
        await reader.disconnect()
    finally:
        writer.close()


async def test_a_write_from_a_fresh_connection_each_time_is_seen(tmp_path):
    """As ``docproxy documents add`` does: one short-lived connection per change."""
    path = tmp_path / "c.db"
    reader = reader_on_new_db(path)
    for i in range(10):
        commit_once(path, "UPDATE d SET v = ? WHERE id = 'x'", f"v{i}")
        assert await value(reader) == f"v{i}"
        assert await value(reader) == f"v{i}"
    await reader.disconnect()


async def test_the_cache_is_bounded(tmp_path):
    reader = reader_on_new_db(tmp_path / "c.db")
    reader.cache.max_entries = 8
    for i in range(50):
        await reader.fetch_one(QUERY, {"document_id": f"id{i}"})
    assert len(reader.cache) <= 8
    assert await value(reader) == "one"
    await reader.disconnect()


async def test_rollback_mode_skips_the_pragma_but_not_a_change(tmp_path, monkeypatch):
    """With a rollback journal the header's change counter stands in for the pragma."""
    path = tmp_path / "c.db"
    reader = reader_on_new_db(path)
    pragmas = 0
    real_validate = reader.cache.validate

    def counting_validate(version: int) -> None:
        nonlocal pragmas
        pragmas += 1
        real_validate(version)

    monkeypatch.setattr(reader.cache, "validate", counting_validate)

    for _ in range(5):
        assert await value(reader) == "one"
    assert pragmas == 1  # the header did not move: no pragma after the first
    commit_once(path, "UPDATE d SET v = 'two' WHERE id = 'x'")
    assert await value(reader) == "two"
    assert pragmas == 2
    # The file goes to WAL: the header says so, and every look-up asks the pragma.
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=wal")
    writer.execute("UPDATE d SET v = 'three' WHERE id = 'x'")
    assert await value(reader) == "three"
    for i in range(5):
        writer.execute("UPDATE d SET v = ? WHERE id = 'x'", (f"w{i}",))
        assert await value(reader) == f"w{i}"
    # ...and back to a rollback journal (which needs the file to itself for a moment).
    await reader.disconnect()
    writer.execute("PRAGMA journal_mode=delete")
    await reader.connect()
    assert await value(reader) == "w4"
    writer.execute("UPDATE d SET v = 'back' WHERE id = 'x'")
    assert await value(reader) == "back"
    writer.execute("UPDATE d SET v = 'again' WHERE id = 'x'")
    assert await value(reader) == "again"
    writer.close()
    await reader.disconnect()


async def test_a_reader_reconnected_to_a_replaced_file_reads_the_new_one(tmp_path):
    path = tmp_path / "c.db"
    reader = reader_on_new_db(path)
    assert await value(reader) == "one"
    fresh = tmp_path / "fresh.db"
    make_db(fresh, "delete")
    commit_once(fresh, "UPDATE d SET v = 'replaced' WHERE id = 'x'")
    fresh.replace(path)
    await reader.disconnect()
    await reader.connect()
    assert await value(reader) == "replaced"
    commit_once(path, "UPDATE d SET v = 'changed' WHERE id = 'x'")
    assert await value(reader) == "changed"
    await reader.disconnect()


async def test_the_catalog_converts_a_cached_row_once_and_sees_changes(tmp_path):
    """``Catalog.get`` reuses the Document the reader's cache made from the row the first time;
    a commit gives a new row, hence a new Document."""
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE documents (id TEXT PRIMARY KEY, file_path TEXT, name TEXT)")
        db.execute("INSERT INTO documents VALUES ('a', 'a.pdf', 'one.pdf')")
    db.close()
    catalog = Catalog(CatalogConfig(url=f"sqlite:///{path}", columns=ColumnMap(name="name")))
    await catalog.open()
    try:
        first = await catalog.get("a")
        assert first is not None and first.name == "one.pdf"
        assert await catalog.get("a") is first  # the same row: not converted again
        commit_once(path, "UPDATE documents SET name = ? WHERE id = 'a'", "two.pdf")
        second = await catalog.get("a")
        assert second is not None and second.name == "two.pdf"
        commit_once(path, "DELETE FROM documents WHERE id = 'a'")
        assert await catalog.get("a") is None
    finally:
        await catalog.disconnect()


async def test_the_catalogs_converted_rows_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("proxy.catalog.sqlite_reader.ROW_CACHE_ENTRIES", 8)
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE documents (id TEXT PRIMARY KEY, file_path TEXT)")
        db.executemany(
            "INSERT INTO documents VALUES (?, ?)", [(f"d{i}", f"{i}.pdf") for i in range(50)]
        )
    db.close()
    catalog = Catalog(CatalogConfig(url=f"sqlite:///{path}"))
    await catalog.open()
    try:
        for i in range(50):
            document = await catalog.get(f"d{i}")
            assert document is not None and document.file_path == f"{i}.pdf"
        assert len(catalog._database.cache) == 8  # the reader keeps the converted rows
    finally:
        await catalog.disconnect()


def test_a_locked_sqlite_catalog_is_waited_for_in_a_thread(tmp_path):
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE d (id TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO d VALUES ('x', 'one')")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE d SET v = 'two'")
    reader = SQLiteReader(str(path))

    async def lookup() -> tuple[str, float]:
        ticks = 0

        async def tick() -> None:  # the loop must keep running while the reader waits
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        row = await reader.fetch_one(
            "SELECT v FROM d WHERE id = :document_id", {"document_id": "x"}
        )
        ticker.cancel()
        return row["v"], ticks

    threading.Timer(0.5, lambda: (writer.execute("COMMIT"), writer.close())).start()
    value, ticks = asyncio.run(lookup())
    assert value == "two"
    assert ticks >= 20  # about 0.5 s of ticks: the wait did not block the event loop
    asyncio.run(reader.disconnect())
