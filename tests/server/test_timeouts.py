"""Timeouts and caps against a running server: a head or body that stalls is 408, idle
connections close, a full worker refuses with 503 without touching running downloads, and a
reader that stops taking bytes is reset while a slow one keeps its stream."""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from tests.harness import run_cli
from tests.server.raw import connect, get, parse, read_until_close, request, send_all, wait_closed

TIMERS = {"header_timeout": 1, "body_timeout": 1, "keepalive_timeout": 1}
BIG = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def service(make_module_service):
    return make_module_service({"server": TIMERS, "download": {"send_timeout": 1}})


def add_document(service, data: bytes, name: str) -> str:
    source = service.config_path.parent / name
    source.write_bytes(data)
    return run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()


@pytest.fixture(scope="module")
def big(service):
    data = os.urandom(BIG)
    return add_document(service, data, "big.bin"), hashlib.sha256(data).hexdigest()


def download_head(service, document_id: str) -> bytes:
    return get(f"/download/{document_id}", f"Authorization: Bearer {service.token()}")


def assert_408(raw: bytes) -> None:
    reply = parse(raw)
    assert reply.status == 408, raw[:300]
    assert reply.envelope() == {"statusCode": 408, "data": {}, "message": "Request timeout"}


def test_a_head_that_stalls_is_408(service):
    with connect(service.port) as sock:
        send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert_408(read_until_close(sock))


def test_a_head_sent_a_byte_at_a_time_must_still_arrive_in_time(service):
    head = get("/healthz")
    with connect(service.port) as sock:
        for byte in head[:40]:
            send_all(sock, bytes([byte]))
            time.sleep(0.1)
        assert_408(read_until_close(sock))


def test_a_silent_connection_is_closed_without_an_answer(service):
    with connect(service.port) as sock:
        wait_closed(sock, timeout=15)


def test_an_idle_keep_alive_connection_is_closed(service):
    with connect(service.port) as sock:
        send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        wait_closed(sock, timeout=15)


def test_a_body_that_stops_arriving_is_408(service):
    with connect(service.port) as sock:
        send_all(
            sock,
            b"POST /generate-client-auth-token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"client_id"',
        )
        assert_408(read_until_close(sock))
    assert "Traceback" not in service.log()


def test_a_slow_reader_keeps_its_stream(service, big):
    """The reader takes its bytes far slower than the server sends (the server waits on it
    throughout, for several send_timeouts), never stalling a whole one: all bytes arrive."""
    document_id, digest = big
    with connect(service.port, timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        send_all(sock, download_head(service, document_id))
        received = bytearray()
        while chunk := sock.recv(256 * 1024):
            received += chunk
            time.sleep(0.02)
    reply = parse(bytes(received))
    assert reply.status == 200
    assert len(reply.body) == BIG
    assert hashlib.sha256(reply.body).hexdigest() == digest


def test_a_reader_that_stops_is_reset(service, big):
    document_id, _ = big
    with connect(service.port, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        send_all(sock, download_head(service, document_id))
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        time.sleep(4)  # several send_timeouts without taking a byte
        received = len(first)
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
    assert received < BIG
    assert "no progress for 1s (download.send_timeout)" in service.log()


def test_a_full_worker_refuses_at_once_and_running_downloads_go_on(make_module_service):
    service = make_module_service({"server": {"max_connections": 5}})
    data = os.urandom(BIG)
    document_id = add_document(service, data, "capped.bin")
    token = service.token()
    running = connect(service.port, timeout=60)
    running.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    send_all(running, get(f"/download/{document_id}", f"Authorization: Bearer {token}"))
    first = running.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    idle = [connect(service.port) for _ in range(4)]  # with the download: 5 connections
    try:
        time.sleep(0.5)
        refused = request(service.port, get("/healthz"))
        assert refused.status == 503
        assert refused.envelope() == {
            "statusCode": 503,
            "data": {},
            "message": "Too many connections",
        }
        rest = read_until_close(running)
    finally:
        running.close()
        for sock in idle:
            sock.close()
    reply = parse(first + rest)
    assert reply.status == 200 and reply.body == data
    time.sleep(0.5)  # the closed ones are gone: a new connection is served again
    assert request(service.port, get("/healthz")).status == 200
