from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud_servers import stores  # noqa: F401 - session fixture: moto, GCS emulator, Azurite
from tests.harness import Service, base_config, merge, write_config
from tests.served import access, breakable, served  # noqa: F401 - the per-backend download suite

# Must be set before anything imports gcsfs: otherwise gcsfs probes each bucket over gRPC and
# every call against the emulator hangs for about a minute.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def require_server(what: str, reason: str) -> None:
    """A test whose server is absent fails in CI (CI=true) and is skipped elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator:
    """Start docproxy with the embedded default under tmp_path, plus config overrides."""
    started: list[Service] = []

    def start(overrides: dict | None = None, env: dict | None = None) -> Service:
        config = merge(base_config(tmp_path), overrides or {})
        path = write_config(tmp_path / f"config-{len(started)}.yaml", config)
        service = Service(path, tmp_path / f"service-{len(started)}.log", env=env)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def make_module_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Like make_service, but the services live for the whole test module (faster suites)."""
    started: list[Service] = []

    def start(overrides: dict | None = None, env: dict | None = None) -> Service:
        workdir = tmp_path_factory.mktemp("service")
        config = merge(base_config(workdir), overrides or {})
        path = write_config(workdir / "config.yaml", config)
        service = Service(path, workdir / "service.log", env=env)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()
