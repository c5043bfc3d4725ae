"""One archive from every kind of store at once: a local folder, S3 (moto), GCS (the emulator)
and Azure Blob (Azurite); and ``docproxy fetch --zip`` downloading it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from proxy.catalog.embedded import add_file, ensure_schema
from proxy.catalog.sqlite_reader import sqlite_file
from proxy.config.loading import load_settings
from tests.cloud_servers import new_bucket
from tests.harness import REPO, Service, base_config, merge, write_config
from tests.samples import insert_document, sha256
from tests.served import random_bytes

KINDS = ("s3", "gcs", "az")


@pytest.fixture(scope="module")
def mixed(stores, tmp_path_factory):
    """docproxy with four backends, and one document in each: (service, {id: bytes})."""
    workdir = tmp_path_factory.mktemp("mixed")
    buckets = {kind: new_bucket(stores[kind]) for kind in KINDS}
    env: dict[str, str] = {}
    for kind in KINDS:
        env.update(stores[kind].env())
    os.environ.update(env)  # the settings this process loads name the same variables
    backends = {kind: stores[kind].backend(buckets[kind]) for kind in KINDS}
    config = merge(base_config(workdir), {"storage": {"backends": backends}})
    path = write_config(workdir / "config.yaml", config)
    service = Service(path, workdir / "service.log", env=env).start()
    settings = load_settings(path)
    ensure_schema(settings)
    contents: dict[str, bytes] = {}
    source = workdir / "local-source"
    local = random_bytes(3 * 1024 * 1024 + 5, seed=1)
    source.write_bytes(local)
    contents[add_file(settings, source, name="local.bin")] = local
    for seed, kind in enumerate(KINDS, start=2):
        data = random_bytes(2 * 1024 * 1024 + seed, seed=seed)
        key = f"docs/{uuid.uuid4().hex}.bin"
        stores[kind].put(buckets[kind], key, data)
        document_id = insert_document(
            Path(sqlite_file(settings.catalog.url)),
            str(uuid.uuid4()),
            file_path=stores[kind].url(buckets[kind], key),
            name=f"{kind}.bin",
        )
        contents[document_id] = data
    try:
        yield service, contents
    finally:
        service.stop()


def archive_link(service: Service, document_ids: list[str]) -> str:
    response = httpx.post(
        f"{service.base_url}/download/zip",
        json={"document_ids": document_ids, "filename": "mixed.zip"},
        headers={"authorization": f"Bearer {service.token()}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["download_url"]


def check_archive(data: bytes, contents: dict[str, bytes], names: list[str], tmp_path: Path):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == names
        for name, expected in zip(names, contents.values(), strict=True):
            assert sha256(archive.read(name)) == sha256(expected)
    path = tmp_path / "check.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_archive_reads_every_store(mixed, tmp_path):
    service, contents = mixed
    response = httpx.get(archive_link(service, list(contents)), timeout=60)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    names = ["local.bin", "s3.bin", "gcs.bin", "az.bin"]
    check_archive(response.content, contents, names, tmp_path)


def fetch(service: Service, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPROXY_")}
    credentials = ["--url", service.base_url, "--token", service.token()]
    return subprocess.run(
        [sys.executable, "-m", "proxy", "fetch", *args, *credentials],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def test_fetch_zip_downloads_one_archive(mixed, tmp_path):
    service, contents = mixed
    result = fetch(service, "--zip", *contents, "-o", "bundle.zip", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = ["local.bin", "s3.bin", "gcs.bin", "az.bin"]
    check_archive((tmp_path / "bundle.zip").read_bytes(), contents, names, tmp_path)
    # Without -o: the name the server gives (the default archive name).
    result = fetch(service, "--zip", *list(contents)[:2], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert zipfile.ZipFile(tmp_path / "documents.zip").namelist() == ["local.bin", "s3.bin"]


def test_fetch_zip_says_which_document_was_refused(mixed, tmp_path):
    service, contents = mixed
    result = fetch(service, "--zip", *contents, "no-such-document", cwd=tmp_path)
    assert result.returncode == 1
    assert "Document not found (HTTP 437): document no-such-document" in result.stderr
    result = fetch(service, *list(contents)[:2], cwd=tmp_path)
    assert result.returncode == 2
    assert "several documents need --zip" in result.stderr
