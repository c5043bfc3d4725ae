"""SQLite: a file read through one long-lived read-only connection (``sqlite_reader``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from proxy.catalog.dialect import Connection, Dialect
from proxy.catalog.errors import CatalogUnavailable
from proxy.catalog.settings import CatalogConfig
from proxy.catalog.sqlite_reader import SQLiteReader, sqlite_file


class SQLite(Dialect):
    name: ClassVar[str] = "sqlite"
    embeddable: ClassVar[bool] = True

    def open(self, config: CatalogConfig) -> Connection:
        path = sqlite_file(config.url)
        # An operator's file is never created (the read-only open would fail on it anyway);
        # the embedded one is docproxy's, made at start.
        if not config.embedded and not Path(path).is_file():
            raise CatalogUnavailable(f"SQLite file {path} does not exist")
        return SQLiteReader(path)
