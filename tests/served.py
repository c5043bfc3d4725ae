"""A running docproxy per storage backend, with a way to put documents into it (fixtures:
``served``, ``breakable`` and ``access``, made available to every test by tests/conftest.py).

``BACKENDS`` lists the backends the download tests run on: the local folder, and S3, GCS and
Azure Blob through their emulators (moto, gcp-storage-emulator, Azurite; see
tests/cloud_servers.py). Each entry of ``SETUPS`` gives the config overrides that make that
backend the default, a function that stores bytes and registers a document for them in the
embedded catalog, and one that rewrites a stored object in place. An absent emulator skips its
backend's tests (and fails them in CI) through ``require_server``.

Cloud backends are configured with ``presign: proxy``: the "link" access then gets the proxy's
own signed link, so both accesses test docproxy's HTTP semantics, not the emulator's.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.catalog.embedded import add_file, ensure_schema, list_documents
from proxy.catalog.sqlite_reader import sqlite_file
from proxy.config.loading import load_settings
from tests.cloud_servers import Store, new_bucket, start_store
from tests.harness import Service, base_config, merge, write_config
from tests.samples import insert_document


@dataclass
class BackendSetup:
    #: (workdir, emulator or None, bucket or None) -> config overrides
    overrides: Callable[[Path, Store | None, str | None], Mapping[str, Any]]
    #: (served, data, name, type) -> document id
    add: Callable[[Served, bytes, str, str | None], str]
    #: (served, document id, data): replace the stored object's bytes (new ETag)
    replace: Callable[[Served, str, bytes], None]
    #: (served, document id, first bytes): the object shrinks to its first bytes
    cut: Callable[[Served, str, bytes], None] | None = None
    #: the emulator kind in tests/cloud_servers.py (None: no emulator)
    store: str | None = None


def _add_local(served: Served, data: bytes, name: str, type_: str | None) -> str:
    source = served.workdir / f"upload-{uuid.uuid4().hex}"
    source.write_bytes(data)
    try:
        return add_file(load_settings(served.service.config_path), source, name=name, type_=type_)
    finally:
        source.unlink()


def _file_path(served: Served, document_id: str) -> str:
    settings = load_settings(served.service.config_path)
    (row,) = [d for d in list_documents(settings) if d.id == document_id]
    return str(row.file_path)


def _local_path(served: Served, document_id: str) -> Path:
    return served.workdir / "files" / _file_path(served, document_id)


def _replace_local(served: Served, document_id: str, data: bytes) -> None:
    _local_path(served, document_id).write_bytes(data)


def _cut_local(served: Served, document_id: str, kept: bytes) -> None:
    os.truncate(_local_path(served, document_id), len(kept))


def _cloud_overrides(
    workdir: Path, store: Store | None, bucket: str | None, **options: Any
) -> dict[str, Any]:
    assert store is not None and bucket is not None
    backend = store.backend(bucket, presign="proxy", **options)
    return {"storage": {"default": "cloud", "backends": {"cloud": backend}}}


def _add_cloud(served: Served, data: bytes, name: str, type_: str | None) -> str:
    """Upload to the emulator, then register the key in the embedded catalog (by hand: the
    ``documents add`` command copies into a local backend only)."""
    assert served.store is not None and served.bucket is not None
    key = f"docs/{uuid.uuid4().hex}{Path(name).suffix}"
    served.store.put(served.bucket, key, data)
    settings = load_settings(served.service.config_path)
    ensure_schema(settings)
    return insert_document(
        Path(sqlite_file(settings.catalog.url)),
        str(uuid.uuid4()),
        file_path=key,
        name=name,
        type_=type_,
        size=len(data),
        checksum=sha256(data),
    )


def _replace_cloud(served: Served, document_id: str, data: bytes) -> None:
    assert served.store is not None and served.bucket is not None
    served.store.put(served.bucket, _file_path(served, document_id), data)


SETUPS: dict[str, BackendSetup] = {
    "local": BackendSetup(
        overrides=lambda workdir, store, bucket: {},
        add=_add_local,
        replace=_replace_local,
        cut=_cut_local,
    ),
    **{
        kind: BackendSetup(
            overrides=partial(_cloud_overrides, **options),
            add=_add_cloud,
            replace=_replace_cloud,
            # The object replaced by its first bytes; S3: see the breakable fixture.
            cut=_replace_cloud if store != "s3" else None,
            store=store,
        )
        for kind, store, options in (
            # S3 twice: every read straight into chunks (big ranges in production), and every
            # read through the SDK (small ones, and whatever the plain GET does not expect).
            ("s3", "s3", {"fast_read_min_size": 0}),
            ("s3-sdk", "s3", {"fast_read_min_size": False}),
            ("gcs", "gcs", {}),
            ("az", "az", {}),
        )
    },
}
BACKENDS = ["local", "s3", "s3-sdk", "gcs", "az"]
ACCESS = ["direct", "link"]


@dataclass
class Served:
    backend: str
    service: Service
    workdir: Path
    setup: BackendSetup
    token: str = ""
    store: Store | None = None
    bucket: str | None = None
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

    def replace(self, document_id: str, data: bytes) -> None:
        """Rewrite the stored object of ``document_id`` in place."""
        self.setup.replace(self, document_id, data)

    def reads(self) -> dict[str, int]:
        return self.service.health()


@contextmanager
def serve_backend(backend: str, workdir: Path, store: Store | None = None) -> Iterator[Served]:
    """docproxy with ``backend`` as its default store (on a new bucket of ``store``)."""
    setup = SETUPS[backend]
    bucket: str | None = None
    if store is not None:
        bucket = new_bucket(store)
        # The config names its secrets by environment variable, for the service and for the
        # settings this process loads to register documents (test-only values).
        os.environ.update(store.env())
    workdir.mkdir(parents=True, exist_ok=True)
    config = merge(base_config(workdir), setup.overrides(workdir, store, bucket))
    path = write_config(workdir / "config.yaml", config)
    env = store.env() if store is not None else {}
    service = Service(path, workdir / "service.log", env=env).start()
    try:
        served = Served(backend, service, workdir, setup, store=store, bucket=bucket)
        served.token = service.token()
        yield served
    finally:
        service.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    setup = SETUPS[request.param]
    store: Store | None = None
    if setup.store is not None:
        # Started once per session; an absent emulator skips here (fails in CI).
        store = request.getfixturevalue("stores")[setup.store]
    with serve_backend(
        request.param, tmp_path_factory.mktemp(f"served-{request.param}"), store
    ) as s:
        yield s


@pytest.fixture
def breakable(
    served: Served, tmp_path: Path
) -> Iterator[tuple[Served, Callable[[str, bytes], None]]]:
    """A served backend and ``cut(document_id, kept)``, which breaks a stored object under a
    running download: it shrinks to its first bytes ``kept``, so that reads past them fail.

    local: the file is truncated. GCS, Azure: the object is replaced by ``kept``, so
    the next ranged read finds its end (empty answer, or 416). S3: a download is one GET for the
    whole span, which a replaced object does not disturb, so the store itself goes away: a
    throwaway moto server with its own docproxy, never the session's shared one.
    """
    if served.setup.store != "s3":
        yield served, lambda document_id, kept: served.setup.cut(served, document_id, kept)
        return
    store = start_store("s3", tmp_path / "moto")
    try:
        with serve_backend(served.backend, tmp_path / "served", store) as own:
            yield own, lambda document_id, kept: store.stop()
    finally:
        store.stop()


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
