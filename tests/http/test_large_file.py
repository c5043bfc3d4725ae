"""Big files: streamed in bounded chunks with flat server memory, and an honest end on a fault.

Memory is read from /proc (VmRSS, VmHWM) of the server process while a download runs. These are
bounds, not timings: the promise is peak memory well under 100 MiB for a 200 MiB file.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.samples import insert_document

MiB = 1024 * 1024
BIG_SIZE = 200 * MiB
MEMORY_GROWTH_LIMIT_KIB = 50 * 1024  # "well under 100 MiB"


def write_big_file(path: Path, size: int) -> str:
    """Write ``size`` bytes (each MiB distinct, so a repeated chunk would show); return SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as handle:
        for index in range(size // MiB):
            chunk = index.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


class MemorySampler:
    """Polls the server's RSS in a thread; ``peak_kib`` is the highest value seen."""

    def __init__(self, service) -> None:
        self.service = service
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.service.memory_kib()[0])
            time.sleep(0.005)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def service(make_module_service):
    service = make_module_service()
    workdir = service.config_path.parent
    service.big_sha256 = write_big_file(workdir / "files" / "big.bin", BIG_SIZE)
    insert_document(workdir / "docproxy.db", "big", file_path="big.bin", name="big.bin")
    return service


@pytest.fixture(scope="module")
def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


def test_200_mib_download_is_exact_and_memory_stays_flat(service, auth, record_property):
    # One small download first, so lazily imported code is not counted as growth.
    assert httpx.get(f"{service.base_url}/download/nope", headers=auth).status_code == 437
    rss_before, _ = service.memory_kib()
    digest = hashlib.sha256()
    received = 0
    with (
        MemorySampler(service) as sampler,
        httpx.stream("GET", f"{service.base_url}/download/big", headers=auth) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(BIG_SIZE)
        for chunk in response.iter_raw(MiB):
            digest.update(chunk)
            received += len(chunk)
    _, hwm = service.memory_kib()
    growth = sampler.peak_kib - rss_before
    record_property("server_rss_before_kib", rss_before)
    record_property("server_rss_peak_kib", sampler.peak_kib)
    record_property("server_vmhwm_kib", hwm)
    print(
        f"\n200 MiB GET: server RSS before {rss_before / 1024:.1f} MiB, peak "
        f"{sampler.peak_kib / 1024:.1f} MiB (growth {growth / 1024:.1f} MiB), "
        f"VmHWM {hwm / 1024:.1f} MiB"
    )
    assert received == BIG_SIZE
    assert digest.hexdigest() == service.big_sha256
    assert growth < MEMORY_GROWTH_LIMIT_KIB
    assert hwm < 100 * 1024 + rss_before  # never, since start, near the size of the file


def test_200_mib_through_a_presigned_link(service, auth):
    link = httpx.post(
        f"{service.base_url}/download", headers=auth, json={"document_id": "big"}
    ).json()["data"]["download_url"]
    digest = hashlib.sha256()
    with httpx.stream("GET", link) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == service.big_sha256


def test_parallel_downloads_are_exact_and_memory_stays_flat(service, auth):
    """Four clients at once on the same 200 MiB file: each byte-exact, memory still bounded."""
    rss_before, _ = service.memory_kib()
    digests: list[str] = []

    def download() -> None:
        digest = hashlib.sha256()
        with httpx.stream(
            "GET", f"{service.base_url}/download/big", headers=auth, timeout=60
        ) as response:
            for chunk in response.iter_raw(MiB):
                digest.update(chunk)
        digests.append(digest.hexdigest())

    with MemorySampler(service) as sampler:
        threads = [threading.Thread(target=download) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    growth = sampler.peak_kib - rss_before
    print(f"\n4 parallel 200 MiB GETs: server RSS growth {growth / 1024:.1f} MiB")
    assert digests == [service.big_sha256] * 4
    assert growth < MEMORY_GROWTH_LIMIT_KIB


def test_slow_reader_keeps_memory_flat(service, auth):
    """A client that reads 64 KiB every 20 ms: backpressure holds the server at a few chunks."""
    rss_before, _ = service.memory_kib()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(
            b"GET /download/big HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: {auth['Authorization']}\r\n\r\n".encode()
        )
        received = 0
        with MemorySampler(service) as sampler:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                received += len(sock.recv(64 * 1024))
                time.sleep(0.02)
            in_flight = service.health()["open_streams"]
    growth = sampler.peak_kib - rss_before
    print(
        f"\nslow reader: {received / MiB:.1f} MiB read, server RSS growth {growth / 1024:.1f} MiB"
    )
    assert in_flight == 1
    assert 0 < received < BIG_SIZE // 4  # the reader really was slow
    assert growth < MEMORY_GROWTH_LIMIT_KIB
    # Hanging up mid-body is counted and logged as the client's doing.
    deadline = time.monotonic() + 10
    while service.health()["open_streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.health()["open_streams"] == 0
    assert "download 'big' aborted by client" in service.log()


def test_file_truncated_mid_stream_never_looks_complete(make_service, tmp_path):
    service = make_service()
    size = 64 * MiB
    path = tmp_path / "files" / "shrinking.bin"
    write_big_file(path, size)
    insert_document(tmp_path / "docproxy.db", "shrinking", file_path="shrinking.bin")
    auth = {"Authorization": f"Bearer {service.token()}"}
    received = 0
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream("GET", f"{service.base_url}/download/shrinking", headers=auth) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw(MiB):
            received += len(chunk)
            if received >= MiB and path.stat().st_size == size:
                os.truncate(path, 4 * MiB)  # the store loses the file's tail mid-download
    assert received < size
    deadline = time.monotonic() + 10
    while "aborted by storage" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = service.log()
    assert "download 'shrinking' aborted by storage" in log
    # The store's fault is logged once, with its cause (the file ended early, or its pinned
    # read saw it change first), and never as a traceback.
    failures = [line for line in log.splitlines() if "ERROR" in line]
    assert len(failures) == 1, log
    assert "storage failed after" in failures[0]
    assert "ended" in failures[0] or "changed during the read" in failures[0]
    assert "Traceback" not in log
    assert service.health()["aborted"] == 1
