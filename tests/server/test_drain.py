"""Graceful drain against a running server: on SIGTERM (or SIGINT) it stops accepting, a
download that can finish does, one still running after ``server.shutdown_timeout`` is reset
(never ended as if complete), an idle keep-alive connection answers one more request with
``Connection: close``, and the process exits soon after, with one worker or two."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import pytest

from tests.harness import run_cli
from tests.server.raw import connect, get, parse, send_all, wait_closed

SIZE = 16 * 1024 * 1024
SHUTDOWN_TIMEOUT = 3
# Exit within shutdown_timeout and a second or two; the margin absorbs a loaded test machine.
EXIT_MARGIN = 8


def start(make_service, workers: int = 1):
    service = make_service({"server": {"workers": workers, "shutdown_timeout": SHUTDOWN_TIMEOUT}})
    data = os.urandom(SIZE)
    source = service.config_path.parent / "drain.bin"
    source.write_bytes(data)
    document_id = run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()
    return service, document_id, data


def open_download(service, document_id: str) -> socket.socket:
    """A download whose head arrived, its body held back by a small receive buffer."""
    sock = connect(service.port, timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    send_all(sock, get(f"/download/{document_id}", f"Authorization: Bearer {service.token()}"))
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    return sock, first


def stop_and_wait(service, sig: int) -> float:
    assert service.process is not None
    began = time.monotonic()
    service.process.send_signal(sig)
    service.process.wait(timeout=SHUTDOWN_TIMEOUT + EXIT_MARGIN)
    return time.monotonic() - began


def assert_quiet(service) -> None:
    log = service.log()
    assert "Traceback" not in log and " ERROR " not in log and "ERROR:" not in log, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_running_download_finishes_and_no_new_connection_is_taken(make_service, sig):
    service, document_id, data = start(make_service)
    sock, first = open_download(service, document_id)
    received = bytearray(first)
    done = threading.Event()

    def read_slowly() -> None:
        with sock:
            while chunk := sock.recv(256 * 1024):
                received.extend(chunk)
                time.sleep(0.005)  # slower than the server, well within shutdown_timeout
        done.set()

    reader = threading.Thread(target=read_slowly)
    reader.start()
    service.process.send_signal(sig)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", service.port), timeout=5).close()
    reader.join(timeout=60)
    assert done.is_set()
    reply = parse(bytes(received))
    assert reply.status == 200 and len(reply.body) == SIZE
    assert hashlib.sha256(reply.body).digest() == hashlib.sha256(data).digest()
    service.process.wait(timeout=SHUTDOWN_TIMEOUT + EXIT_MARGIN)
    assert_quiet(service)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_download_still_running_at_shutdown_timeout_is_reset(make_service, workers):
    service, document_id, _ = start(make_service, workers)
    stalled, first = open_download(service, document_id)  # takes no more bytes
    with stalled:
        took = stop_and_wait(service, signal.SIGTERM)
        received = len(first)
        with pytest.raises(ConnectionResetError):
            while chunk := stalled.recv(1 << 20):
                received += len(chunk)
    assert received < SIZE
    # It waited for the download (the whole shutdown_timeout), then exited.
    assert took >= SHUTDOWN_TIMEOUT - 0.5
    assert "at shutdown (server.shutdown_timeout 3s)" in service.log()
    assert_quiet(service)


def keep_alive_request(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    """Send a GET that asks to keep the connection; read exactly its response."""
    send_all(sock, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    head = received.partition(b"\r\n\r\n")[0]
    reply = parse(received)
    length = int(reply.headers["content-length"])
    while len(received) < len(head) + 4 + length:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    reply = parse(received)
    return reply.status, reply.headers, reply.body


def test_an_idle_keep_alive_connection_is_served_once_more_then_closed(make_service):
    """Closing an idle connection at SIGTERM would lose a request its client (a balancer) is
    sending on it that instant: the connection stays, the request is answered (unready) with
    Connection: close, and the server exits once it is closed."""
    service = make_service({"server": {"shutdown_timeout": 20, "keepalive_timeout": 10}})
    with connect(service.port) as sock:
        status, headers, _ = keep_alive_request(sock, "/readyz")
        assert status == 200 and headers.get("connection") != "close"
        began = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", service.port), timeout=5).close()
        status, headers, body = keep_alive_request(sock, "/readyz")
        assert status == 503 and headers["connection"] == "close", (status, headers)
        assert b"shutting down" in body
        assert wait_closed(sock, timeout=5) < 1
    service.process.wait(timeout=EXIT_MARGIN)
    assert time.monotonic() - began < 6  # neither keepalive_timeout nor shutdown_timeout
    assert_quiet(service)


@pytest.mark.parametrize(
    "server",
    [
        # keepalive_timeout comes first, not shutdown_timeout
        {"shutdown_timeout": 20, "keepalive_timeout": 1},
        # shutdown_timeout comes first, not keepalive_timeout
        {"shutdown_timeout": 1, "keepalive_timeout": 30},
    ],
    ids=["at-keepalive-timeout", "at-shutdown-timeout"],
)
def test_an_idle_keep_alive_connection_closes_at_the_first_timeout_when_draining(
    make_service, server
):
    service = make_service({"server": server})
    with connect(service.port) as sock:
        assert keep_alive_request(sock, "/livez")[0] == 200
        took = stop_and_wait(service, signal.SIGTERM)
        assert wait_closed(sock, timeout=1) < 1  # closed already
    assert took < 6, took
    assert "aborted" not in service.log()  # closed quietly: it was running nothing
    assert_quiet(service)
