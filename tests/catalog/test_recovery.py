"""A catalog database that stops and comes back, on a PostgreSQL cluster the test owns.

The shared server on 5432 is never stopped: this starts its own cluster (initdb in a temp folder,
run as the ``postgres`` user, on a free port) and stops that one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.catalog.test_sql import INSERT, MAPPING, SCHEMA, get, presign
from tests.conftest import require_server
from tests.harness import assert_envelope
from tests.sql_servers import ThrowawayPostgres, run_sql


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayPostgres]:
    if os.geteuid() != 0:
        require_server("throwaway PostgreSQL", "the test must run as root to act as postgres")
    try:
        cluster = ThrowawayPostgres().init()
        cluster.start()
    except (RuntimeError, OSError, LookupError) as exc:
        require_server("throwaway PostgreSQL", str(exc))
    try:
        yield cluster
    finally:
        cluster.destroy()


def test_database_stopped_and_restarted_without_restarting_docproxy(
    own_postgres, make_service, tmp_path
):
    run_sql(own_postgres.url, SCHEMA)
    files = tmp_path / "files"
    files.mkdir()
    (files / "one.txt").write_bytes(b"still here")
    values = {"id": "doc-1", "key": "one.txt", "title": "one.txt", "mime": "text/plain"}
    run_sql(own_postgres.url, (INSERT, {**values, "tenant": None, "size": 10}))
    catalog = {
        "embedded": False,
        "url": own_postgres.url,
        **MAPPING,
        "pool": {"min_size": 2, "max_size": 4, "connect_timeout": 2, "retry_interval": 0.2},
    }
    service = make_service({"catalog": catalog})
    pid = service.process.pid
    token = service.token()
    assert get(service, "doc-1", token).content == b"still here"

    # Stopped: the API's 500s, logged, for as long as it is down.
    own_postgres.stop()
    for _ in range(3):
        assert_envelope(get(service, "doc-1", token), 500, "Failed to download document")
        assert_envelope(presign(service, "doc-1", token), 500, "Failed to generate download URL")
    assert "catalog lookup of 'doc-1' failed" in service.log()

    # Back: served again by the same process, with no restart.
    own_postgres.start()
    time.sleep(0.3)  # past retry_interval, so the next request reconnects
    response = get(service, "doc-1", token)
    assert response.status_code == 200, response.text
    assert response.content == b"still here"
    assert presign(service, "doc-1", token).status_code == 200

    # Restarted between two requests: the pool's connections are dead, yet the first request
    # after the restart succeeds (one reconnect on a lost connection).
    own_postgres.stop()
    own_postgres.start()
    response = get(service, "doc-1", token)
    assert response.status_code == 200, response.text
    assert service.process.poll() is None and service.process.pid == pid
    assert "catalog connection lost" in service.log()


def test_database_down_at_start_then_up(own_postgres, make_service, tmp_path):
    run_sql(own_postgres.url, SCHEMA)
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_bytes(b"late but fine")
    values = {"id": "late", "key": "a.txt", "title": "a.txt", "mime": "text/plain"}
    run_sql(own_postgres.url, (INSERT, {**values, "tenant": None, "size": 13}))
    own_postgres.stop()

    catalog = {"embedded": False, "url": own_postgres.url, **MAPPING}
    service = make_service({"catalog": {**catalog, "pool": {"retry_interval": 0.1}}})
    token = service.token()
    assert_envelope(get(service, "late", token), 500, "Failed to download document")

    own_postgres.start()
    time.sleep(0.2)
    response = get(service, "late", token)
    assert response.status_code == 200, response.text
    assert response.content == b"late but fine"
    assert "catalog database unavailable at start" in service.log()
