"""Throwaway databases on the real SQL servers for the catalog tests.

Each ``ScratchDatabase`` is a database of its own (a file for SQLite), made with a unique name and
dropped afterwards, so tests never see each other's tables and never touch anything else.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from databases import Database, DatabaseURL

from tests.harness import free_port

POSTGRES_URL = (
    os.environ.get("DOCPROXY_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("DOCPROXY_TEST_MYSQL_URL") or "mysql://root@127.0.0.1:3306/mysql"
DIALECTS = ("sqlite", "postgresql", "mysql")


async def _run(url: str, statements: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[Any]:
    database = Database(url)
    await asyncio.wait_for(database.connect(), 5)
    try:
        results = []
        for sql, values in statements:
            if sql.lstrip().upper().startswith(("SELECT", "SHOW")):
                rows = await database.fetch_all(sql, values)
                results.append([dict(row._mapping) for row in rows])
            else:
                results.append(await database.execute(sql, values))
        return results
    finally:
        await database.disconnect()


def run_sql(url: str, *statements: str | tuple[str, Mapping[str, Any]]) -> list[Any]:
    normalised = [(s, None) if isinstance(s, str) else s for s in statements]
    return asyncio.run(_run(url, normalised))


def reachable(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        run_sql(url, "SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class ScratchDatabase:
    """A database with a unique name on one server; ``url`` is what docproxy is given."""

    def __init__(self, dialect: str, workdir: Path) -> None:
        self.dialect = dialect
        self.name = f"docproxy_test_{uuid.uuid4().hex[:12]}"
        if dialect == "sqlite":
            self.admin_url = None
            self.url = f"sqlite:///{workdir / (self.name + '.db')}"
        else:
            self.admin_url = POSTGRES_URL if dialect == "postgresql" else MYSQL_URL
            self.url = str(DatabaseURL(self.admin_url).replace(database=self.name))

    def create(self) -> ScratchDatabase:
        if self.admin_url is not None:
            run_sql(self.admin_url, f"CREATE DATABASE {self.name}")
        return self

    def drop(self) -> None:
        if self.admin_url is None:
            return
        force = " WITH (FORCE)" if self.dialect == "postgresql" else ""
        run_sql(self.admin_url, f"DROP DATABASE IF EXISTS {self.name}{force}")

    def run(self, *statements: str | tuple[str, Mapping[str, Any]]) -> list[Any]:
        return run_sql(self.url, *statements)

    def tables(self) -> set[str]:
        sql = {
            "sqlite": "SELECT name AS t FROM sqlite_master WHERE type = 'table'",
            "postgresql": "SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'",
            "mysql": "SELECT table_name AS t FROM information_schema.tables"
            f" WHERE table_schema = '{self.name}'",
        }[self.dialect]
        return {row["t"] for row in self.run(sql)[0]}


class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temp folder, run as ``postgres``).

    Only this cluster is ever stopped: the shared server on 5432 is never touched.
    """

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="docproxy-pg-"))
        self.data = self.directory / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(self.directory, "postgres", "postgres")

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout}{result.stderr}")

    def init(self) -> ThrowawayPostgres:
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.directory} -c fsync=off"
        log = str(self.directory / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
