"""The SQLite reader's row cache never serves a row another connection has changed."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proxy.sqlite_reader import SQLiteReader

QUERY = "SELECT v FROM d WHERE id = :document_id"


def make_db(path, journal_mode: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA journal_mode={journal_mode}")
        db.execute("CREATE TABLE d (id TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO d VALUES ('x', 'one')")
    db.close()


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_changes_by_another_connection_are_seen_at_once(tmp_path, journal_mode):
    path = tmp_path / "c.db"
    make_db(path, journal_mode)
    reader = SQLiteReader(str(path))
    writer = sqlite3.connect(path, isolation_level=None)

    async def value(document_id: str = "x") -> str | None:
        row = await reader.fetch_one(QUERY, {"document_id": document_id})
        return None if row is None else row["v"]

    async def check() -> None:
        assert await value() == "one"
        assert await value() == "one"  # a hit
        assert len(reader.cache) == 1
        writer.execute("UPDATE d SET v = 'two' WHERE id = 'x'")
        assert await value() == "two"
        assert await value("y") is None  # "no row" is cached too...
        writer.execute("INSERT INTO d VALUES ('y', 'new')")
        assert await value("y") == "new"  # ...and forgotten on the insert
        writer.execute("DELETE FROM d WHERE id = 'x'")
        assert await value() is None
        # Many commits in a row, each read back at once.
        for i in range(20):
            writer.execute("UPDATE d SET v = ? WHERE id = 'y'", (f"v{i}",))
            assert await value("y") == f"v{i}"
        # An explicit transaction is seen only once committed, and then at once.
        writer.execute("BEGIN")
        writer.execute("UPDATE d SET v = 'pending' WHERE id = 'y'")
        if journal_mode == "wal":
            assert await value("y") == "v19"
        writer.execute("COMMIT")
        assert await value("y") == "pending"
        await reader.disconnect()

    try:
        asyncio.run(check())
    finally:
        writer.close()


def test_a_write_from_a_fresh_connection_each_time_is_seen(tmp_path):
    """As ``docproxy documents add`` does: one short-lived connection per change."""
    path = tmp_path / "c.db"
    make_db(path, "delete")
    reader = SQLiteReader(str(path))

    async def check() -> None:
        for i in range(10):
            with sqlite3.connect(path) as db:
                db.execute("UPDATE d SET v = ? WHERE id = 'x'", (f"v{i}",))
            db.close()
            row = await reader.fetch_one(QUERY, {"document_id": "x"})
            assert row is not None and row["v"] == f"v{i}"
            again = await reader.fetch_one(QUERY, {"document_id": "x"})
            assert again is not None and again["v"] == f"v{i}"
        await reader.disconnect()

    asyncio.run(check())


def test_the_cache_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "c.db"
    make_db(path, "delete")
    reader = SQLiteReader(str(path))
    reader.cache.max_entries = 8

    async def check() -> None:
        for i in range(50):
            await reader.fetch_one(QUERY, {"document_id": f"id{i}"})
        assert len(reader.cache) <= 8
        row = await reader.fetch_one(QUERY, {"document_id": "x"})
        assert row is not None and row["v"] == "one"
        await reader.disconnect()

    asyncio.run(check())


def test_rollback_mode_skips_the_pragma_but_not_a_change(tmp_path, monkeypatch):
    """With a rollback journal the header's change counter stands in for the pragma."""
    path = tmp_path / "c.db"
    make_db(path, "delete")
    reader = SQLiteReader(str(path))
    pragmas = 0
    real_validate = reader.cache.validate

    def counting_validate(version: int) -> None:
        nonlocal pragmas
        pragmas += 1
        real_validate(version)

    monkeypatch.setattr(reader.cache, "validate", counting_validate)

    async def value() -> str | None:
        row = await reader.fetch_one(QUERY, {"document_id": "x"})
        return None if row is None else row["v"]

    async def check() -> None:
        for _ in range(5):
            assert await value() == "one"
        assert pragmas == 1  # the header did not move: no pragma after the first
        with sqlite3.connect(path) as db:
            db.execute("UPDATE d SET v = 'two' WHERE id = 'x'")
        db.close()
        assert await value() == "two"
        assert pragmas == 2
        # The file goes to WAL: the header says so, and every look-up asks the pragma.
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA journal_mode=wal")
        writer.execute("UPDATE d SET v = 'three' WHERE id = 'x'")
        assert await value() == "three"
        for i in range(5):
            writer.execute("UPDATE d SET v = ? WHERE id = 'x'", (f"w{i}",))
            assert await value() == f"w{i}"
        # ...and back to a rollback journal (which needs the file to itself for a moment).
        await reader.disconnect()
        writer.execute("PRAGMA journal_mode=delete")
        await reader.connect()
        assert await value() == "w4"
        writer.execute("UPDATE d SET v = 'back' WHERE id = 'x'")
        assert await value() == "back"
        writer.execute("UPDATE d SET v = 'again' WHERE id = 'x'")
        assert await value() == "again"
        writer.close()
        await reader.disconnect()

    asyncio.run(check())


def test_a_reader_reconnected_to_a_replaced_file_reads_the_new_one(tmp_path):
    path = tmp_path / "c.db"
    make_db(path, "delete")
    reader = SQLiteReader(str(path))

    async def value() -> str | None:
        row = await reader.fetch_one(QUERY, {"document_id": "x"})
        return None if row is None else row["v"]

    async def check() -> None:
        assert await value() == "one"
        fresh = tmp_path / "fresh.db"
        make_db(fresh, "delete")
        with sqlite3.connect(fresh) as db:
            db.execute("UPDATE d SET v = 'replaced' WHERE id = 'x'")
        db.close()
        fresh.replace(path)
        await reader.disconnect()
        await reader.connect()
        assert await value() == "replaced"
        with sqlite3.connect(path) as db:
            db.execute("UPDATE d SET v = 'changed' WHERE id = 'x'")
        db.close()
        assert await value() == "changed"
        await reader.disconnect()

    asyncio.run(check())
