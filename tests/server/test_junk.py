"""Nothing a client does without a fault on docproxy's side logs an ERROR, a WARNING or a
traceback: junk requests, early disconnects and bad bodies, thrown at a running server, are at
most one INFO line each, and a normal download works afterwards."""

from __future__ import annotations

import os
import socket
import struct
import time

import httpx
import pytest

from tests.harness import run_cli
from tests.server.raw import connect, read_until_close, send_all

DATA = os.urandom(3 * 1024 * 1024)


@pytest.fixture(scope="module")
def service(make_module_service):
    # No access log: each line counted below is one of docproxy's own.
    service = make_module_service(
        {"server": {"header_timeout": 1, "body_timeout": 1, "access_log": False}}
    )
    source = service.config_path.parent / "junk.bin"
    source.write_bytes(DATA)
    service.document_id = run_cli(
        service.config_path, "documents", "add", str(source)
    ).stdout.strip()
    service.bearer = service.token()
    return service


def token_post(body: bytes, length: int | None = None, content_type: str = "application/json"):
    length = len(body) if length is None else length
    return (
        b"POST /generate-client-auth-token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode()
        + body
    )


H = b"Host: 127.0.0.1\r\n"
JUNK: dict[str, bytes] = {
    "nothing": b"",
    "blank lines": b"\r\n\r\n\r\n",
    "random bytes": bytes(range(256)) * 4,
    "half a request line": b"GET /heal",
    "half a head": b"GET /healthz HTTP/1.1\r\n" + H,
    "unknown method": b"FROB /healthz HTTP/1.1\r\n" + H + b"\r\n",
    "long method": b"G" * 5000 + b" / HTTP/1.1\r\n" + H + b"\r\n",
    "bad version": b"GET /healthz HTTP/9.9\r\n" + H + b"\r\n",
    "no version": b"GET /healthz\r\n" + H + b"\r\n",
    "bare LF": b"GET /healthz HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\n" + H + b"NoColon\r\n\r\n",
    "space before colon": b"GET /healthz HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n",
    "NUL in a value": b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "folded header": b"GET /healthz HTTP/1.1\r\n" + H + b"X-A: a\r\n  folded\r\n\r\n",
    "non-ASCII path": b"GET /\xff\xfe\x80 HTTP/1.1\r\n" + H + b"\r\n",
    "non-ASCII host": b"GET /healthz HTTP/1.1\r\nHost: \xc3\xa9t\xc3\xa9\r\n\r\n",
    "absolute target": b"GET http://elsewhere.example/healthz HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "CONNECT": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "websocket upgrade": b"GET /healthz HTTP/1.1\r\n"
    + H
    + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "h2c upgrade": b"GET /healthz HTTP/1.1\r\n"
    + H
    + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "content-length not a number": token_post(b"{}").replace(b"Length: 2", b"Length: abc"),
    "negative content-length": token_post(b"{}").replace(b"Length: 2", b"Length: -2"),
    "two content-lengths": token_post(b"{}").replace(
        b"Length: 2", b"Length: 2\r\nContent-Length: 3"
    ),
    "content-length and chunked": token_post(b"0\r\n\r\n").replace(
        b"Content-Length: 5", b"Content-Length: 5\r\nTransfer-Encoding: chunked"
    ),
    "bad chunk size": b"POST /generate-client-auth-token HTTP/1.1\r\n"
    + H
    + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "gzip, chunked": b"POST /download HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "body cut short": token_post(b'{"client_id":', length=200),
    "body then gone": token_post(b'{"client_id": "x"', length=200),
    "expect 100 then gone": token_post(b"", length=50).replace(
        b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n", 1
    ),
    "malformed JSON": token_post(b'{"client_id": }'),
    "deep JSON": token_post(b"[" * 50000 + b"]" * 50000),
    "huge number": token_post(b'{"client_id": 1' + b"0" * 5000 + b"}"),
    "invalid UTF-8 JSON": token_post(b'{"client_id": "\xff\xfe"}'),
    "lone surrogate": token_post(b'{"client_id": "\\ud800", "client_secret": "x"}'),
    "JSON not an object": token_post(b"[1, 2, 3]"),
    "wrong content type": token_post(b"{}", content_type="text/plain"),
    "traversal id": b"GET /download/..%2f..%2fetc%2fpasswd HTTP/1.1\r\n" + H + b"\r\n",
    "percent junk id": b"GET /download/%ff%fe%00 HTTP/1.1\r\n" + H + b"\r\n",
    "garbage bearer": b"GET /download/x HTTP/1.1\r\n"
    + H
    + b"Authorization: Bearer \xff\x00.\x01\r\n\r\n",
    "garbage link": b"GET /links/x?expires=abc&signature=%00%ff HTTP/1.1\r\n" + H + b"\r\n",
    "pipelined burst": (b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n") * 30,
}


@pytest.mark.parametrize("data", JUNK.values(), ids=JUNK.keys())
def test_junk_is_answered_without_a_fault(service, data):
    before = len(service.log().splitlines())
    with connect(service.port, timeout=15) as sock:
        send_all(sock, data)
        raw = read_until_close(sock)
    if raw:
        assert raw.startswith(b"HTTP/1.1 "), raw[:200]
        assert not raw.startswith(b"HTTP/1.1 5"), raw[:300]
    added = service.log().splitlines()[before:]
    requests = max(1, data.count(b"HTTP/1.1\r\n"))
    assert len(added) <= requests, added
    for line in added:
        assert " INFO " in line, added


def test_clients_that_leave_early_are_no_fault(service):
    before = len(service.log().splitlines())
    # Mid-body, right after the head, mid-download, and with a reset instead of a close.
    for data in (
        token_post(b'{"client_id": "x"', length=500),
        token_post(b"", length=500),
        b"GET /download/"
        + service.document_id.encode()
        + b" HTTP/1.1\r\n"
        + H
        + f"Authorization: Bearer {service.bearer}\r\n\r\n".encode(),
    ):
        for reset in (False, True):
            sock = connect(service.port)
            send_all(sock, data)
            time.sleep(0.1)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    time.sleep(1.5)
    added = service.log().splitlines()[before:]
    assert len(added) <= 6, added
    for line in added:
        assert " INFO " in line, added


def test_the_log_holds_no_error_and_a_download_still_works(service):
    # Last in this module: after every kind of junk above.
    log = service.log()
    assert "Traceback" not in log
    assert " ERROR " not in log and "ERROR:" not in log
    assert " WARNING " not in log and "WARNING:" not in log
    response = httpx.get(
        f"{service.base_url}/download/{service.document_id}",
        headers={"Authorization": f"Bearer {service.bearer}"},
        timeout=30,
    )
    assert response.status_code == 200 and response.content == DATA
