"""The status lines of the API's own codes carry a reason phrase, read on the raw wire from
``docproxy serve`` (its own protocol on httptools) and from plain uvicorn with each of its HTTP
implementations (httptools and h11)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    REPO,
    Service,
    base_config,
    free_port,
    run_cli,
    write_config,
)


@pytest.fixture(scope="module", params=["serve", "httptools", "h11"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """docproxy serve, or uvicorn itself serving docproxy's app factory."""
    workdir = tmp_path_factory.mktemp(f"status-{request.param}")
    config = write_config(workdir / "config.yaml", base_config(workdir))
    sample = workdir / "nameless.txt"
    sample.write_bytes(b"x")
    run_cli(config, "documents", "add", str(sample), "--id", "doc-1")
    if request.param == "serve":
        service = Service(config, workdir / "serve.log").start()
        try:
            yield service.port, service.token()
        finally:
            service.stop()
        return
    port = free_port()
    log = (workdir / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "proxy.app:app_from_environment",
         "--http", request.param, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "DOCPROXY_CONFIG": str(config)},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, (workdir / "uvicorn.log").read_text()
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "uvicorn did not answer within 30 s"
            time.sleep(0.05)
    issued = httpx.post(
        f"{base}/generate-client-auth-token",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=10,
    )
    try:
        yield port, issued.json()["data"]["access_token"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def status_line(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {received!r}"
            received += chunk
    return received.split(b"\r\n", 1)[0]


def get(path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def test_435_has_a_reason_phrase(server):
    port, token = server
    assert status_line(port, get("/download", token)) == b"HTTP/1.1 435 Invalid Request"


def test_437_has_a_reason_phrase(server):
    port, token = server
    line = status_line(port, get("/download/no-such-document", token))
    assert line == b"HTTP/1.1 437 Document Not Found"


def test_known_codes_keep_their_phrases(server):
    port, token = server
    assert status_line(port, get("/download/doc-1", token)) == b"HTTP/1.1 200 OK"
    assert status_line(port, get("/download/doc-1", "forged")) == b"HTTP/1.1 403 Forbidden"
