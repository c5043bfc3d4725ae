"""A running docproxy per storage backend, with a way to put documents into it.

``BACKENDS`` lists the backends the download tests run on. Each entry of ``SETUPS`` gives the
config overrides that make that backend the default and a function that stores bytes and
registers a document for them; adding a cloud backend means adding one entry (its emulator
fixture can call ``require_server`` when the emulator is absent).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.config import load_settings
from proxy.embedded import add_file, list_documents
from tests.harness import Service, base_config, merge, write_config


@dataclass
class BackendSetup:
    overrides: Callable[[Path], Mapping[str, Any]]
    #: (served, data, name, type) -> document id
    add: Callable[[Served, bytes, str, str | None], str]
    #: (served, document id) -> the object's file on disk, when the backend has one
    local_path: Callable[[Served, str], Path] | None = None


def _add_local(served: Served, data: bytes, name: str, type_: str | None) -> str:
    source = served.workdir / f"upload-{uuid.uuid4().hex}"
    source.write_bytes(data)
    try:
        return add_file(load_settings(served.service.config_path), source, name=name, type_=type_)
    finally:
        source.unlink()


def _local_path(served: Served, document_id: str) -> Path:
    settings = load_settings(served.service.config_path)
    (row,) = [d for d in list_documents(settings) if d.id == document_id]
    return served.workdir / "files" / str(row.file_path)


SETUPS: dict[str, BackendSetup] = {
    "local": BackendSetup(overrides=lambda workdir: {}, add=_add_local, local_path=_local_path),
}
BACKENDS = ["local"]
ACCESS = ["direct", "link"]


@dataclass
class Served:
    backend: str
    service: Service
    workdir: Path
    setup: BackendSetup
    token: str = ""
    _links: dict[str, str] = field(default_factory=dict)

    def add(self, data: bytes, name: str = "sample.txt", type_: str | None = None) -> str:
        """Store ``data`` as a new document. A ``.txt`` name and no type: no MIME sniffing."""
        return self.setup.add(self, data, name, type_)

    def url(self, document_id: str, access: str) -> str:
        if access == "direct":
            return f"{self.service.base_url}/download/{document_id}"
        if document_id not in self._links:
            response = httpx.post(
                f"{self.service.base_url}/download",
                json={"document_id": document_id},
                headers={"authorization": f"Bearer {self.token}"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            self._links[document_id] = response.json()["data"]["download_url"]
        return self._links[document_id]

    def auth(self, access: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if access == "direct" else {}

    def request(
        self,
        document_id: str,
        access: str = "direct",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return httpx.request(
            method,
            self.url(document_id, access),
            headers={**self.auth(access), **(headers or {})},
            timeout=30,
        )

    def reads(self) -> dict[str, int]:
        return self.service.health()


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    setup = SETUPS[request.param]
    workdir = tmp_path_factory.mktemp(f"served-{request.param}")
    config = merge(base_config(workdir), setup.overrides(workdir))
    path = write_config(workdir / "config.yaml", config)
    service = Service(path, workdir / "service.log").start()
    try:
        served = Served(request.param, service, workdir, setup)
        served.token = service.token()
        yield served
    finally:
        service.stop()


@pytest.fixture(params=ACCESS)
def access(request: pytest.FixtureRequest) -> str:
    """GET /download/{id} with a token, or the proxy's own presigned link."""
    return request.param


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Reproducible bytes with no period, so that a misplaced range cannot match by chance."""
    generator = random.Random(seed)
    block = 1 << 20  # randbytes cannot make more than 256 MiB at once
    return b"".join(generator.randbytes(min(block, size - at)) for at in range(0, size, block))
