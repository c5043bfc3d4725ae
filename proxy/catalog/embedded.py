"""The embedded default catalog: docproxy's own SQLite file and its local store.

This is the one place docproxy writes: ``docproxy documents add`` fills it for a new user.
Everything here is synchronous on purpose; it runs at start-up and from the CLI only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from proxy.catalog.settings import EMBEDDED_TABLE
from proxy.catalog.sqlite_reader import sqlite_file
from proxy.config.settings import Settings

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {EMBEDDED_TABLE} (
    id TEXT PRIMARY KEY,
    file_path TEXT,
    document_url TEXT,
    name TEXT,
    type TEXT,
    group_name TEXT,
    size INTEGER,
    checksum TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    deleted_at TEXT
)
"""

_SAFE_EXTENSION = re.compile(r"^\.[a-z0-9]{1,10}$")


class EmbeddedError(Exception):
    """The embedded catalog cannot do what was asked (not configured, duplicate id...)."""


@dataclass(frozen=True, slots=True)
class EmbeddedDocument:
    id: str
    file_path: str | None
    url: str | None
    name: str | None
    type: str | None
    group: str | None
    size: int | None


def ensure_schema(settings: Settings) -> None:
    """Create the database file, its folder and the documents table when they are missing."""
    path = sqlite_file(settings.catalog.url)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute(SCHEMA)


def _connect(settings: Settings) -> sqlite3.Connection:
    if not settings.catalog.embedded:
        raise EmbeddedError("catalog.embedded is false: docproxy never writes to your database")
    ensure_schema(settings)
    return sqlite3.connect(sqlite_file(settings.catalog.url))


def _local_root(settings: Settings) -> Path:
    default = next(b for b in settings.storage.backends if b.name == settings.storage.default)
    if default.local_root is None:
        raise EmbeddedError(
            f"storage.default ({default.name}) is a {default.protocol} backend; "
            "'documents add' copies into a local (file) backend only"
        )
    return default.local_root


def add_file(
    settings: Settings,
    source: Path,
    *,
    document_id: str | None = None,
    name: str | None = None,
    type_: str | None = None,
    group: str | None = None,
) -> str:
    """Copy ``source`` into the local store and register it; return the document id."""
    if not source.is_file():
        raise EmbeddedError(f"{source}: not a file")
    document_id = document_id or str(uuid.uuid4())
    root = _local_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    extension = source.suffix.lower()
    # The store key is random: the display name (any characters) lives only in the catalog.
    key = f"{uuid.uuid4().hex}{extension if _SAFE_EXTENSION.match(extension) else ''}"
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=root, delete=False) as temp, source.open("rb") as reader:
        while block := reader.read(1024 * 1024):
            digest.update(block)
            temp.write(block)
    size = os.path.getsize(temp.name)
    try:
        with _connect(settings) as connection:
            connection.execute(
                f"INSERT INTO {EMBEDDED_TABLE} (id, file_path, name, type, group_name, size,"
                " checksum) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (document_id, key, name or source.name, type_, group, size, digest.hexdigest()),
            )
        shutil.move(temp.name, root / key)
    except sqlite3.IntegrityError as exc:
        os.unlink(temp.name)
        raise EmbeddedError(f"document id {document_id!r} already exists") from exc
    except BaseException:
        os.unlink(temp.name)
        raise
    return document_id


def add_url(
    settings: Settings, url: str, *, document_id: str | None = None, name: str | None = None
) -> str:
    """Register a URL-based document (no file path); the download endpoints refuse it."""
    document_id = document_id or str(uuid.uuid4())
    try:
        with _connect(settings) as connection:
            connection.execute(
                f"INSERT INTO {EMBEDDED_TABLE} (id, document_url, name) VALUES (?, ?, ?)",
                (document_id, url, name),
            )
    except sqlite3.IntegrityError as exc:
        raise EmbeddedError(f"document id {document_id!r} already exists") from exc
    return document_id


def list_documents(settings: Settings) -> list[EmbeddedDocument]:
    with _connect(settings) as connection:
        rows = connection.execute(
            f"SELECT id, file_path, document_url, name, type, group_name, size"
            f" FROM {EMBEDDED_TABLE} WHERE deleted_at IS NULL ORDER BY created_at, id"
        ).fetchall()
    return [EmbeddedDocument(*row) for row in rows]


def _row(connection: sqlite3.Connection, document_id: str) -> sqlite3.Row:
    connection.row_factory = sqlite3.Row
    row = connection.execute(
        f"SELECT * FROM {EMBEDDED_TABLE} WHERE id = ?", (document_id,)
    ).fetchone()
    if row is None:
        raise EmbeddedError(f"document id {document_id!r} not found")
    return row


def show_document(settings: Settings, document_id: str) -> dict[str, object]:
    """Every column of the document's row, in the table's order (soft-deleted rows too)."""
    with _connect(settings) as connection:
        return dict(_row(connection, document_id))


def _stored_file(settings: Settings, document_id: str, file_path: str) -> Path:
    """The file a row names in the local store; a path that leads out of it is refused."""
    root = _local_root(settings)
    target = root / file_path
    # The folder is resolved (symlinks followed), the file itself is not: unlinking a symlink
    # removes the link, never what it points to.
    inside = target.parent.resolve().is_relative_to(root.resolve())
    if not inside or "://" in file_path or target.name in ("", ".."):
        raise EmbeddedError(
            f"document {document_id!r}: file_path {file_path!r} is not in the local store;"
            " give --keep-file to remove only the row"
        )
    return target


@dataclass(frozen=True, slots=True)
class Removal:
    file_path: str | None  # the row's file_path
    deleted: Path | None  # the file deleted from the local store, if any


def remove_document(settings: Settings, document_id: str, *, keep_file: bool = False) -> Removal:
    """Delete the row and, unless ``keep_file``, its file in the local store (kept while another
    row names it too; already gone is fine). A refusal deletes nothing."""
    with _connect(settings) as connection:  # one transaction: an error rolls the DELETE back
        file_path = _row(connection, document_id)["file_path"]
        connection.execute(f"DELETE FROM {EMBEDDED_TABLE} WHERE id = ?", (document_id,))
        shared = connection.execute(
            f"SELECT 1 FROM {EMBEDDED_TABLE} WHERE file_path = ? LIMIT 1", (file_path,)
        ).fetchone()
        if keep_file or not file_path or shared:
            return Removal(file_path, None)
        target = _stored_file(settings, document_id, file_path)
        try:
            target.unlink()
        except FileNotFoundError:
            return Removal(file_path, None)
        return Removal(file_path, target)
