"""Local stand-ins for the clouds, each a real server in a child process on a free port.

moto (S3), gcp-storage-emulator (GCS) and Azurite (Azure Blob). A ``Store`` starts one, makes
buckets, uploads objects with the provider's own SDK, and writes the docproxy backend config
and environment that reach it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, free_port

AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account (public, the same in every Azurite install).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_KEY = "test-access-key"
S3_SECRET = "test-secret-key"
S3_REGION = "eu-west-1"


class ServerUnavailable(Exception):
    """The server's program is not installed (the caller skips, or fails in CI)."""


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited at start:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not listen within {timeout}s:\n{log.read_text()}")


class Store:
    """One emulator process; ``scheme`` and ``protocol`` name it to docproxy."""

    scheme: str
    protocol: str
    bucket_key = "bucket"
    label: str

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.protocol}-{self.port}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Store:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # so stop() can end the server and its children
            )
        wait_for_port(self.port, self.process, self.log, 60)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # What each store implements with its own SDK:
    def create_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    def put(self, bucket: str, key: str, data: bytes) -> None:
        raise NotImplementedError

    def backend(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """The ``storage.backends.<name>`` mapping for ``bucket``."""
        raise NotImplementedError

    def backend_at(self, bucket: str, endpoint: str, **extra: Any) -> dict[str, Any]:
        """``backend`` reaching the store at ``endpoint`` (scheme, host, port) instead."""
        return self.backend(bucket, endpoint_url=endpoint, **extra)

    def env(self) -> dict[str, str]:
        """Environment variables the backend config refers to."""
        return {}

    def url(self, bucket: str, key: str) -> str:
        return f"{self.scheme}://{bucket}/{key}"

    @property
    def public_endpoint(self) -> str:
        """The same server under another host name, as a client-facing endpoint would be."""
        return f"http://localhost:{self.port}"


class MotoS3(Store):
    scheme = "s3"
    protocol = "s3"
    label = "S3 (moto)"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",  # moto refuses a LocationConstraint of us-east-1 only
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def backend(self, bucket: str, **extra: Any) -> dict[str, Any]:
        return {
            "protocol": "s3",
            "bucket": bucket,
            "region": S3_REGION,
            "endpoint_url": self.endpoint,
            "key_env": "DOCPROXY_TEST_S3_KEY",
            "secret_env": "DOCPROXY_TEST_S3_SECRET",
            "timeout": 5,
            **extra,
        }

    def env(self) -> dict[str, str]:
        return {"DOCPROXY_TEST_S3_KEY": S3_KEY, "DOCPROXY_TEST_S3_SECRET": S3_SECRET}


class FakeGCS(Store):
    scheme = "gs"
    protocol = "gcs"
    label = "GCS (gcp-storage-emulator)"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.key_file = workdir / "service-account.json"
        if not self.key_file.exists():
            write_service_account_key(self.key_file)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
        ]

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        blob = self.client().bucket(bucket).blob(key)
        blob.upload_from_string(data, timeout=300)

    def backend(self, bucket: str, **extra: Any) -> dict[str, Any]:
        return {
            "protocol": "gcs",
            "bucket": bucket,
            "project": "test-project",
            "endpoint_url": self.endpoint,
            "token": "anon",  # the emulator takes no credentials; the key only signs URLs
            "service_account_file": str(self.key_file),
            "timeout": 5,
            **extra,
        }

    def service_account(self) -> dict[str, str]:
        return json.loads(self.key_file.read_text())


class Azurite(Store):
    scheme = "az"
    protocol = "az"
    bucket_key = "container"
    label = "Azure Blob (Azurite)"

    def command(self) -> list[str]:
        if not AZURITE_BIN.exists():
            raise ServerUnavailable(f"{AZURITE_BIN} is missing: run `npm ci` in {REPO}")
        return [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ]

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    def client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_bucket(self, bucket: str) -> None:
        self.client().create_container(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        blob = self.client().get_blob_client(bucket, key)
        blob.upload_blob(data, overwrite=True, max_concurrency=2)

    def backend(self, bucket: str, **extra: Any) -> dict[str, Any]:
        return {
            "protocol": "az",
            "container": bucket,
            "connection_string_env": "DOCPROXY_TEST_AZURE_CONNECTION",
            "timeout": 5,
            **extra,
        }

    def key_backend(self, bucket: str, endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
        """The account name + key + ``endpoint_url`` form of ``backend`` (no connection string);
        ``endpoint`` defaults to this server's, with the account path."""
        return {
            "protocol": "az",
            "container": bucket,
            "account_name": AZURITE_ACCOUNT,
            "account_key_env": "DOCPROXY_TEST_AZURE_KEY",
            "endpoint_url": endpoint or f"{self.endpoint}/{AZURITE_ACCOUNT}",
            "timeout": 5,
            **extra,
        }

    def backend_at(self, bucket: str, endpoint: str, **extra: Any) -> dict[str, Any]:
        return self.key_backend(bucket, f"{endpoint}/{AZURITE_ACCOUNT}", **extra)

    def env(self) -> dict[str, str]:
        return {
            "DOCPROXY_TEST_AZURE_CONNECTION": self.connection_string,
            "DOCPROXY_TEST_AZURE_KEY": AZURITE_KEY,
        }

    @property
    def public_endpoint(self) -> str:
        return f"http://localhost:{self.port}/{AZURITE_ACCOUNT}"


STORES: dict[str, type[Store]] = {"s3": MotoS3, "gcs": FakeGCS, "az": Azurite}


def write_service_account_key(path: Path) -> None:
    """A fresh RSA key in Google's service-account JSON format (signs offline, reaches nothing)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "test-key-1",
                "private_key": pem,
                "client_email": "docproxy-signer@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )


def start_store(kind: str, workdir: Path) -> Store:
    """Start a store of ``kind``; an absent program fails in CI and skips elsewhere."""
    from tests.conftest import require_server

    store = STORES[kind](workdir)
    try:
        return store.start()
    except ServerUnavailable as exc:
        require_server(store.label, str(exc))
        raise


def new_bucket(store: Store) -> str:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    store.create_bucket(bucket)
    return bucket


class SilentServer:
    """Accepts TCP connections and never answers: a store that hangs. Use it with ``with``."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            self._held.append(connection)  # held open, never read, never answered

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        for connection in self._held:
            connection.close()


@asynccontextmanager
async def opened_backend(
    store: Store, bucket: str, *, endpoint: str | None = None, **options: Any
) -> AsyncIterator[Any]:
    """The backend for ``bucket`` of ``store`` (reached at ``endpoint`` when given), parsed
    from config like docproxy's own, opened in this process (and closed afterwards)."""
    from backends.registry import backend_class
    from proxy.config.section import Section

    os.environ.update(store.env())
    errors: list[str] = []
    config = store.backend(bucket, **options)
    if endpoint is not None:
        config = store.backend_at(bucket, endpoint, **options)
    section = Section(config, "backend", errors)
    protocol = section.string("protocol")
    cls = backend_class(protocol)
    parsed = cls.parse_options(section)
    section.finish()
    assert errors == [], errors
    backend = cls("backend", parsed)  # type: ignore[call-arg]
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    """Each kind of store started once for the session, on first use, stopped at the end."""
    started: dict[str, Store] = {}
    workdir = tmp_path_factory.mktemp("stores")

    class Lazy(dict):
        def __missing__(self, kind: str) -> Store:
            started[kind] = start_store(kind, workdir / kind)
            self[kind] = started[kind]
            return started[kind]

    yield Lazy()
    for store in started.values():
        store.stop()
