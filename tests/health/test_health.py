"""/livez, /readyz and /healthz on a live server, with real dependencies that stop: a PostgreSQL
cluster the test owns (never the shared one) and an S3 emulator process of the test's own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.base import StorageError
from proxy.app import create_app
from proxy.config.settings import ConfigError, parse_settings
from tests.catalog.test_sql import MAPPING, SCHEMA
from tests.cloud_servers import ServerUnavailable, SilentServer, new_bucket, opened_backend
from tests.cloud_servers import start_store as start_emulator
from tests.conftest import require_server
from tests.harness import base_config, merge
from tests.sql_servers import ThrowawayPostgres, run_sql


def get(service: Any, path: str) -> httpx.Response:
    return httpx.get(f"{service.base_url}{path}", timeout=10)


def assert_unready(response: httpx.Response, failing: set[str]) -> dict[str, str]:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["statusCode"] == 503 and body["message"] == "Service unavailable"
    assert body["data"]["status"] == "unavailable"
    assert set(body["data"]["failing"]) == failing, body
    return body["data"]["failing"]


def wait_for(service: Any, path: str, status: int, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = get(service, path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


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


def test_ready_and_live_on_the_embedded_default(make_service):
    service = make_service()
    assert get(service, "/livez").json() == {
        "statusCode": 200,
        "data": {"status": "ok"},
        "message": "OKAY",
    }
    assert get(service, "/readyz").json() == {
        "statusCode": 200,
        "data": {"status": "ready"},
        "message": "OKAY",
    }
    legacy = get(service, "/healthz").json()["data"]  # kept: liveness with the counters
    assert legacy["status"] == "ok" and legacy["completed"] == 0


def test_readiness_follows_a_catalog_database_that_stops(own_postgres, make_service, tmp_path):
    run_sql(own_postgres.url, SCHEMA)
    catalog = {
        "embedded": False,
        "url": own_postgres.url,
        **MAPPING,
        "pool": {"connect_timeout": 2, "retry_interval": 0.1},
    }
    fresh = make_service({"catalog": catalog, "health": {"interval": 0, "timeout": 3}})
    cached = make_service({"catalog": catalog, "health": {"interval": 3600}})
    assert get(fresh, "/readyz").status_code == 200
    assert get(cached, "/readyz").status_code == 200

    own_postgres.stop()
    failing = assert_unready(get(fresh, "/readyz"), {"catalog"})
    assert failing["catalog"]  # says why
    assert "postgres@" not in failing["catalog"]  # never the connection URL
    assert get(fresh, "/livez").status_code == 200  # the process still serves
    # The verdict is reused for health.interval: the stopped database is not asked again.
    assert get(cached, "/readyz").status_code == 200
    assert "not ready: catalog:" in fresh.log()

    own_postgres.start()
    assert wait_for(fresh, "/readyz", 200).status_code == 200
    assert "ready again" in fresh.log()
    assert "Traceback" not in fresh.log() and " ERROR " not in fresh.log()


def test_readiness_follows_a_store_emulator_that_stops(make_service, tmp_path):
    try:
        emulator = start_emulator("s3", tmp_path / "moto")
    except ServerUnavailable as exc:
        require_server("moto", str(exc))
    try:
        bucket = new_bucket(emulator)
        backends = {"cloud": emulator.backend(bucket, timeout=2)}
        service = make_service(
            {"storage": {"backends": backends}, "health": {"interval": 0, "timeout": 5}},
            env=emulator.env(),
        )
        assert get(service, "/readyz").status_code == 200
        emulator.stop()
        failing = assert_unready(get(service, "/readyz"), {"storage.cloud"})
        assert "probe cloud (bucket" in failing["storage.cloud"]
        assert "secret" not in failing["storage.cloud"].lower()
    finally:
        emulator.stop()


def test_a_store_that_never_answers_fails_within_health_timeout(make_service):
    with SilentServer() as silent:
        backend = {
            "protocol": "s3",
            "bucket": "hangs",
            "endpoint_url": silent.endpoint,
            "timeout": 30,
        }
        service = make_service(
            {
                "storage": {"backends": {"slow": backend}},
                "health": {"interval": 0, "timeout": 0.5},
            },
            env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
        )
        started = time.monotonic()
        failing = assert_unready(get(service, "/readyz"), {"storage.slow"})
        assert time.monotonic() - started < 5
        assert failing["storage.slow"] == "no answer within 0.5s"


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
async def test_each_cloud_backend_probes_its_bucket(stores, kind):
    try:
        store = stores[kind]
    except ServerUnavailable as exc:
        require_server(kind, str(exc))
    async with opened_backend(store, new_bucket(store)) as backend:
        await backend.probe()
    async with opened_backend(store, "no-such-bucket-here") as backend:
        with pytest.raises(StorageError):
            await backend.probe()


async def test_the_local_and_memory_backends_probe(tmp_path):
    from backends.fsspec_common import StoreOptions
    from backends.local import LocalBackend, LocalOptions
    from backends.memory import MemoryBackend, MemoryOptions

    local = LocalBackend("files", LocalOptions(root=tmp_path / "there"))
    with pytest.raises(StorageError, match="not a readable folder"):
        await local.probe()
    (tmp_path / "there").mkdir()
    await local.open()
    await local.probe()
    memory = MemoryBackend("mem", MemoryOptions(store=StoreOptions(bucket="b")))
    await memory.open()
    await memory.probe()


async def test_readyz_is_503_at_once_while_draining(tmp_path, monkeypatch):
    from proxy.runtime import drain

    settings = parse_settings(base_config(tmp_path))
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://docproxy")
    async with app.router.lifespan_context(app), client:
        assert (await client.get("/readyz")).status_code == 200
        monkeypatch.setattr(drain, "_draining", False)
        drain.begin_draining()
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["data"]["failing"] == {"process": "shutting down"}
        assert (await client.get("/livez")).status_code == 200


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"health": {"timeout": 0}}, "health.timeout: must be at least 0.1 (got 0)"),
        ({"health": {"interval": "soon"}}, "health.interval: must be a number, not str"),
        ({"health": {"every": 5}}, "health.every: unknown key"),
    ],
)
def test_health_keys_are_validated_by_name(tmp_path: Path, section, message):
    with pytest.raises(ConfigError) as raised:
        parse_settings(merge(base_config(tmp_path), section))
    assert message in raised.value.problems
