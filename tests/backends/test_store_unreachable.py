"""A store that cannot be reached (connection refused, a name that does not resolve, a TLS
handshake that fails) answers 500 at once; only a store that accepts and then hangs takes the
backend's ``timeout``. Against real sockets: a closed port, a ``.invalid`` host, the emulator's
plain-HTTP port spoken to over TLS, and a server that accepts and never answers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from backends.base import ObjectNotFound, StorageError
from tests.backends.test_cloud_storage import Catalog, auth, serve
from tests.cloud_servers import SilentServer, Store, opened_backend
from tests.harness import assert_envelope, free_port

# Far longer than a refusal may take, so a slow failure cannot pass for a quick one.
UNREACHABLE_TIMEOUT = 10
HANG_TIMEOUT = 2
QUICK = 2.0  # seconds: "at once", a quick bounded retry included

UNREACHABLE_CAUSES = {
    "refused": re.compile(r"refused|Connect call failed", re.IGNORECASE),
    "dns": re.compile(r"docproxy-test\.invalid|Name or service not known|getaddrinfo"),
    "tls": re.compile(r"\[SSL|SSLError|certificate"),
}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "operator.db")


def unreachable_endpoints(store: Store) -> dict[str, str]:
    return {
        # Bound, taken and closed again: nothing listens there.
        "refused": f"http://127.0.0.1:{free_port()}",
        # .invalid never resolves (RFC 6761).
        "dns": f"http://docproxy-test.invalid:{store.port}",
        # The emulator's plain-HTTP port, spoken to over TLS: the handshake fails.
        "tls": f"https://127.0.0.1:{store.port}",
    }


def timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
def test_unreachable_store_fails_at_once_a_hanging_one_after_its_timeout(
    make_service, catalog, stores, kind
):
    store = stores[kind]
    with SilentServer() as silent:
        endpoints = {**unreachable_endpoints(store), "hangs": silent.endpoint}
        backends, documents = {}, {}
        for name, endpoint in endpoints.items():
            timeout = HANG_TIMEOUT if name == "hangs" else UNREACHABLE_TIMEOUT
            bucket = f"bucket-{name}"  # never reached: no bucket needs to exist
            backends[name] = store.backend_at(bucket, endpoint, timeout=timeout)
            documents[name] = catalog.add(store.url(bucket, "doc.pdf"))
        service = serve(make_service, catalog, backends, [store])
        headers = auth(service)
        elapsed: dict[str, list[float]] = {}
        for name, document_id in documents.items():
            posted, post_seconds = timed(
                httpx.post,
                f"{service.base_url}/download",
                json={"document_id": document_id},
                headers=headers,
                timeout=60,
            )
            got, get_seconds = timed(
                httpx.get, f"{service.base_url}/download/{document_id}", headers=headers, timeout=60
            )
            assert_envelope(posted, 500, "Failed to generate download URL")
            assert_envelope(got, 500, "Failed to download document")
            elapsed[name] = [post_seconds, get_seconds]
    for name in UNREACHABLE_CAUSES:
        assert max(elapsed[name]) < QUICK, (name, elapsed)
    assert all(HANG_TIMEOUT * 0.9 <= s < HANG_TIMEOUT + QUICK for s in elapsed["hangs"]), elapsed

    service.stop()
    lines = service.log().splitlines()
    assert not [line for line in lines if "Traceback" in line], "\n".join(lines)
    for name, document_id in documents.items():
        failures = [line for line in lines if f"document {document_id!r}: storage failed" in line]
        assert len(failures) == 2, (name, failures)  # one line per request, with its cause
        cause = UNREACHABLE_CAUSES.get(name, re.compile(f"within {HANG_TIMEOUT}s"))
        assert all(cause.search(line) for line in failures), (name, failures)


def read_variants(kind: str) -> list[dict]:
    """The read paths of each backend: S3 reads through the SDK or with a presigned GET."""
    if kind == "s3":
        return [{"fast_read_min_size": False}, {"fast_read_min_size": 0}]
    return [{}]


async def drain(backend, key: str) -> None:
    async for _ in backend.stream_range(key, 0, 100):
        pass


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
async def test_stat_and_read_of_an_unreachable_store_fail_at_once(stores, kind):
    store = stores[kind]
    for where, endpoint in unreachable_endpoints(store).items():
        for options in read_variants(kind):
            async with opened_backend(
                store, "bucket", endpoint=endpoint, timeout=UNREACHABLE_TIMEOUT, **options
            ) as backend:
                for operation in (backend.stat("doc.pdf"), drain(backend, "doc.pdf")):
                    started = time.monotonic()
                    with pytest.raises(StorageError) as caught:
                        await operation
                    seconds = time.monotonic() - started
                    assert not isinstance(caught.value, ObjectNotFound)
                    assert seconds < QUICK, (where, options, seconds, caught.value)
                    assert UNREACHABLE_CAUSES[where].search(str(caught.value)), caught.value


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
async def test_read_from_a_hanging_store_takes_its_timeout_once(stores, kind):
    store = stores[kind]
    with SilentServer() as silent:
        for options in read_variants(kind):
            async with opened_backend(
                store, "bucket", endpoint=silent.endpoint, timeout=HANG_TIMEOUT, **options
            ) as backend:
                started = time.monotonic()
                with pytest.raises(StorageError, match=f"within {HANG_TIMEOUT}s"):
                    await drain(backend, "doc.pdf")
                seconds = time.monotonic() - started
                # Not once per read path: a fast read that timed out is not retried by the SDK.
                assert HANG_TIMEOUT * 0.9 <= seconds < HANG_TIMEOUT + QUICK, (options, seconds)
