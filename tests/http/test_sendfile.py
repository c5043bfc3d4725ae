"""Local files on a plain TCP connection go out with sendfile(2), straight from the page cache:
byte-exact (whole, ranges, one connection after another), and every other promise of a download
kept on that path: HEAD, keep-alive, backpressure with flat memory, disconnects, the send
timeout, and a file cut short under the download.

``/healthz``'s ``zero_copy`` counts the bodies sent that way, so each test shows the path taken.
The module's server says the kernel holds at most 1 MiB in flight, so a body's last 1.6 MiB
(``sendfile_tail``) go through Python whatever this host's socket buffers are.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time

import httpx
import pytest

from proxy.http.streaming import kernel_in_flight, sendfile_tail
from tests.harness import run_cli
from tests.http.test_large_file import MemorySampler, write_big_file
from tests.samples import insert_document
from tests.server.raw import connect, parse, send_all

MiB = 1024 * 1024
SIZE = 64 * MiB
SENDFILE = {"download": {"sendfile": True}}
IN_FLIGHT = MiB  # the module's server's download.sendfile_in_flight


@pytest.fixture(scope="module")
def service(make_module_service):
    service = make_module_service(
        {"download": {"send_timeout": 1, "sendfile": True, "sendfile_in_flight": IN_FLIGHT}}
    )
    workdir = service.config_path.parent
    service.data = os.urandom(SIZE)
    (workdir / "files" / "big.bin").write_bytes(service.data)
    insert_document(workdir / "docproxy.db", "big", file_path="big.bin", name="big.bin")
    service.auth = f"Authorization: Bearer {service.token()}"
    return service


def request_bytes(path: str, *headers: str, method: str = "GET", close: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, buffered: bytearray, *, head_only: bool = False) -> tuple:
    """One response from ``sock`` (bytes after it stay in ``buffered``): status, headers, body."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(MiB)
        assert chunk, bytes(buffered[:200])
        buffered += chunk
    end = buffered.index(b"\r\n\r\n") + 4
    reply = parse(bytes(buffered[:end]))
    length = 0 if head_only else int(reply.headers["content-length"])
    while len(buffered) < end + length:
        chunk = sock.recv(4 * MiB)
        assert chunk, f"closed after {len(buffered) - end} of {length} body bytes"
        buffered += chunk
    body = bytes(buffered[end : end + length])
    del buffered[: end + length]
    return reply.status, reply.headers, body


def counters(service) -> dict[str, int]:
    return service.health()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_whole_file_range_and_head_on_one_keep_alive_connection(service):
    before = counters(service)
    buffered = bytearray()
    with connect(service.port, timeout=30) as sock:
        send_all(sock, request_bytes("/download/big", service.auth))
        status, headers, body = read_response(sock, buffered)
        assert status == 200 and headers["content-length"] == str(SIZE)
        assert hashlib.sha256(body).digest() == hashlib.sha256(service.data).digest()

        # The next request on the same connection: a range in the middle, then its end.
        start, stop = 3 * MiB + 17, 41 * MiB + 5
        send_all(sock, request_bytes("/download/big", service.auth, f"Range: bytes={start}-{stop}"))
        status, headers, body = read_response(sock, buffered)
        assert status == 206
        assert headers["content-range"] == f"bytes {start}-{stop}/{SIZE}"
        assert body == service.data[start : stop + 1]

        send_all(sock, request_bytes("/download/big", service.auth, "Range: bytes=-100000"))
        status, _, body = read_response(sock, buffered)
        assert status == 206 and body == service.data[-100000:]

        # HEAD: the head alone, and the connection still answers after it.
        send_all(sock, request_bytes("/download/big", service.auth, method="HEAD"))
        status, headers, _ = read_response(sock, buffered, head_only=True)
        assert status == 200 and headers["content-length"] == str(SIZE)
        send_all(sock, request_bytes("/healthz", close=True))
        status, _, body = read_response(sock, buffered)
        assert status == 200 and b'"zero_copy"' in body
        assert not buffered and sock.recv(1) == b""  # closed as asked, nothing extra
    after = counters(service)
    # The whole file and the long range; the last 100000 bytes are shorter than the tail.
    assert 100000 < sendfile_tail(IN_FLIGHT) < stop + 1 - start
    assert after["zero_copy"] - before["zero_copy"] == 2
    sent = SIZE + (stop + 1 - start) + 100000
    assert after["bytes_sent"] - before["bytes_sent"] == sent
    assert after["bytes_read"] - before["bytes_read"] == sent
    assert after["completed"] - before["completed"] == 3  # a HEAD sends no body


def test_pipelined_requests_are_answered_in_order(service):
    buffered = bytearray()
    with connect(service.port, timeout=30) as sock:
        send_all(
            sock,
            request_bytes("/download/big", service.auth, "Range: bytes=0-99999")
            + request_bytes("/download/big", service.auth, "Range: bytes=100000-299999")
            + request_bytes("/livez", close=True),
        )
        assert read_response(sock, buffered)[2] == service.data[:100000]
        assert read_response(sock, buffered)[2] == service.data[100000:300000]
        assert read_response(sock, buffered)[0] == 200


def test_a_sendfiled_body_ends_without_the_corks_delay(service):
    """While a span goes out by sendfile the socket is corked (full segments only); it is
    uncorked once the span is queued, so neither the body's end nor the next response on the
    connection waits for the kernel's 200 ms flush of a corked short segment."""
    stop = 4 * MiB + 12345  # the span ends with a short segment, and so does the tail
    assert sendfile_tail(IN_FLIGHT) < stop
    before = counters(service)
    buffered = bytearray()
    took = []
    with connect(service.port, timeout=30) as sock:
        for _ in range(5):
            started = time.monotonic()
            send_all(sock, request_bytes("/download/big", service.auth, f"Range: bytes=0-{stop}"))
            assert read_response(sock, buffered)[2] == service.data[: stop + 1]
            send_all(sock, request_bytes("/livez"))
            assert read_response(sock, buffered)[0] == 200
            took.append(time.monotonic() - started)
    assert counters(service)["zero_copy"] - before["zero_copy"] == 5
    assert min(took) < 0.1, took  # a cork left on would hold each end for 200 ms


def test_slow_readers_keep_memory_flat(service):
    """Four readers far slower than the server: the bodies stay in the page cache and the
    socket buffers, not in the server's memory."""
    service.health()  # warm
    rss_before, _ = service.memory_kib()
    digests: list[bytes] = []

    def read_slowly() -> None:
        buffered = bytearray()
        with connect(service.port, timeout=60) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            send_all(sock, request_bytes("/download/big", service.auth, "Range: bytes=0-8388607"))
            while b"\r\n\r\n" not in buffered:
                buffered += sock.recv(65536)
            body = bytearray(buffered[buffered.index(b"\r\n\r\n") + 4 :])
            while len(body) < 8 * MiB:
                body += sock.recv(128 * 1024)
                time.sleep(0.01)
        digests.append(hashlib.sha256(body).digest())

    with MemorySampler(service) as sampler:
        readers = [threading.Thread(target=read_slowly) for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=120)
    growth = sampler.peak_kib - rss_before
    print(f"\n4 slow readers by sendfile: server RSS growth {growth} KiB")
    assert digests == [hashlib.sha256(service.data[: 8 * MiB]).digest()] * 4
    assert growth < 4 * 1024  # at most 1 MiB per download


def test_a_client_that_goes_away_is_counted_and_logged_as_such(service):
    before = counters(service)
    with connect(service.port, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        send_all(sock, request_bytes("/download/big", service.auth))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: counters(service)["aborted"] == before["aborted"] + 1)
    after = counters(service)
    assert after["zero_copy"] == before["zero_copy"] + 1
    assert after["completed"] == before["completed"]
    assert 0 < after["bytes_sent"] - before["bytes_sent"] < SIZE
    assert "download 'big' aborted by client" in service.log()
    assert "Traceback" not in service.log() and "ERROR" not in service.log()


def test_a_reader_that_stops_is_reset_after_the_send_timeout(service):
    before = counters(service)
    with connect(service.port, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        send_all(sock, request_bytes("/download/big", service.auth))
        received = len(sock.recv(65536))
        time.sleep(3)  # three send timeouts without taking a byte
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(MiB):
                received += len(chunk)
    assert received < SIZE
    assert "no progress for 1s (download.send_timeout)" in service.log()
    assert wait_for(lambda: counters(service)["aborted"] == before["aborted"] + 1)
    assert counters(service)["zero_copy"] == before["zero_copy"] + 1


def test_a_file_cut_short_under_the_download_resets_it(make_service, tmp_path):
    service = make_service(SENDFILE)
    path = tmp_path / "files" / "shrinking.bin"
    write_big_file(path, SIZE)
    insert_document(tmp_path / "docproxy.db", "shrinking", file_path="shrinking.bin")
    received = 0
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream(
            "GET",
            f"{service.base_url}/download/shrinking",
            headers={"Authorization": f"Bearer {service.token()}"},
        ) as response,
    ):
        assert response.headers["content-length"] == str(SIZE)
        for chunk in response.iter_raw(MiB):
            received += len(chunk)
            if received >= MiB and path.stat().st_size == SIZE:
                os.truncate(path, 4 * MiB)
    assert received < SIZE
    assert wait_for(lambda: "aborted by storage" in service.log())
    health = service.health()
    assert health["zero_copy"] == 1 and health["aborted"] == 1
    failures = [line for line in service.log().splitlines() if "ERROR" in line]
    assert len(failures) == 1 and "storage failed after" in failures[0], failures
    assert "Traceback" not in service.log()


def test_a_small_body_goes_the_usual_way(make_service, tmp_path):
    """Up to 64 KiB, one read and one send cost less than sendfile's extra calls."""
    service = make_service(SENDFILE)
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(10_000))
    run_cli(service.config_path, "documents", "add", str(source), "--id", "small")
    response = httpx.get(
        f"{service.base_url}/download/small",
        headers={"Authorization": f"Bearer {service.token()}"},
    )
    assert response.content == source.read_bytes()
    assert service.health()["zero_copy"] == 0


def test_a_file_rewritten_in_place_is_cut_never_complete(make_service, tmp_path):
    """The change is seen at the next piece and the download is reset, as an aborted download
    by storage (bytes the kernel still held may carry the new content: the body is cut)."""
    service = make_service(SENDFILE)
    path = tmp_path / "files" / "moving.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    insert_document(tmp_path / "docproxy.db", "moving", file_path="moving.bin")
    with connect(service.port, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow reader
        auth = f"Authorization: Bearer {service.token()}"
        send_all(sock, request_bytes("/download/moving", auth))
        received = bytearray()
        while len(received) < MiB:
            received += sock.recv(65536)
        with path.open("r+b") as handle:  # same inode, same size, new bytes
            handle.write(os.urandom(SIZE))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        try:
            while chunk := sock.recv(MiB):
                received += chunk
        except ConnectionResetError:
            pass
    body = received[received.index(b"\r\n\r\n") + 4 :]
    assert len(body) < SIZE  # short: the client can tell
    assert wait_for(lambda: "download 'moving' aborted by storage" in service.log())
    health = service.health()
    assert health["zero_copy"] == 1 and health["aborted"] == 1 and health["completed"] == 0
    assert "Traceback" not in service.log()


@pytest.mark.parametrize(
    ("settings", "zero_copy"), [({}, 1), ({"download": {"sendfile": False}}, 0)]
)
def test_on_by_default_and_off_when_set(make_service, settings, zero_copy):
    """The default sends a big local body by sendfile; ``download.sendfile: false`` reads it
    through Python, as always."""
    data = os.urandom(sendfile_tail(kernel_in_flight()) + 4 * MiB)
    server = make_service(settings)
    workdir = server.config_path.parent
    (workdir / "files" / "big.bin").write_bytes(data)
    insert_document(workdir / "docproxy.db", "big", file_path="big.bin", name="big.bin")
    response = httpx.get(
        f"{server.base_url}/download/big",
        headers={"Authorization": f"Bearer {server.token()}"},
        timeout=60,
    )
    assert response.content == data
    assert server.health()["zero_copy"] == zero_copy
    assert server.health()["completed"] == 1


def download_then_rewrite(service, size: int) -> tuple[bytes, bytes]:
    """A client with room for the whole body in its socket buffers asks for it and reads
    nothing until the server has logged it complete; then the file is rewritten in place
    (same inode and size, new bytes, a later mtime) and the client reads. The old bytes and
    the body received."""
    path = service.config_path.parent / "files" / "rewritten.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    insert_document(
        service.config_path.parent / "docproxy.db", "rewritten", file_path="rewritten.bin"
    )
    with connect(service.port, timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
        auth = f"Authorization: Bearer {service.token()}"
        send_all(sock, request_bytes("/download/rewritten", auth, close=True))
        assert wait_for(lambda: "download 'rewritten' complete" in service.log())
        with path.open("r+b") as handle:
            handle.write(os.urandom(size))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        received = bytearray()
        while chunk := sock.recv(MiB):
            received += chunk
    return data, parse(bytes(received)).body


def test_a_body_complete_before_an_in_place_rewrite_keeps_its_old_bytes(make_service):
    """The kernel sends a sendfile'd page as the page cache holds it when the reader takes it,
    not as it was when sendfile queued it. So a body's last ``sendfile_tail`` bytes, more than
    the kernel can hold in flight, are read and checked through Python: whatever the client
    has not taken yet when the server ends the body is a copy of the old bytes."""
    service = make_service(SENDFILE)
    old, body = download_then_rewrite(service, 4 * MiB)
    assert body == old


def test_with_the_in_flight_bytes_understated_the_rewrite_shows(make_service):
    """The same download with ``sendfile_in_flight`` set far below what the kernel holds: most
    of the body goes by sendfile, the server ends it complete, and the client then reads the
    new bytes in it. This is what the tail guards against (and why the setting's default is
    read from the kernel)."""
    service = make_service({"download": {"sendfile": True, "sendfile_in_flight": 1}})
    old, body = download_then_rewrite(service, 4 * MiB)
    assert service.health()["zero_copy"] == 1
    assert len(body) == len(old) and body != old


def test_at_shutdown_a_running_download_finishes_and_a_stalled_one_is_reset(make_service):
    service = make_service({**SENDFILE, "server": {"shutdown_timeout": 3}})
    workdir = service.config_path.parent
    data = os.urandom(16 * MiB)
    (workdir / "files" / "drain.bin").write_bytes(data)
    insert_document(workdir / "docproxy.db", "drain", file_path="drain.bin")
    auth = f"Authorization: Bearer {service.token()}"
    socks = []
    for _ in range(2):
        sock = connect(service.port, timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        send_all(sock, request_bytes("/download/drain", auth, close=True))
        socks.append((sock, bytearray(sock.recv(65536))))
    (running, received), (stalled, first) = socks
    assert received.startswith(b"HTTP/1.1 200") and first.startswith(b"HTTP/1.1 200")

    def read_slowly() -> None:
        while chunk := running.recv(256 * 1024):
            received.extend(chunk)
            time.sleep(0.005)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    began = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    reader.join(timeout=30)
    assert parse(bytes(received)).body == data  # finished whole within shutdown_timeout
    service.process.wait(timeout=15)
    assert time.monotonic() - began >= 2.5  # it waited for the stalled download
    with pytest.raises(ConnectionResetError):
        while stalled.recv(MiB):
            pass
    running.close()
    stalled.close()
    log = service.log()
    assert "at shutdown (server.shutdown_timeout 3s)" in log
    assert "download 'drain' complete" in log and "download 'drain' aborted by client" in log
    assert "Traceback" not in log and "ERROR" not in log


TLS_SERVER = """
import sys, uvicorn
from proxy.config.loading import load_settings
from proxy.server.factory import protocol_factory

config_path, port, cert, key = sys.argv[1:]
settings = load_settings(config_path)
uvicorn.run(
    "proxy.app:app_from_environment", factory=True, host="127.0.0.1", port=int(port),
    http=protocol_factory(settings.server.limits, settings.download.send_timeout),
    ssl_certfile=cert, ssl_keyfile=key, log_level="info",
)
"""


def self_signed(folder) -> tuple[str, str]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_through_tls_the_body_goes_the_usual_way(service, tmp_path):
    """The server offers sendfile on plain TCP only: under TLS the bytes must be encrypted,
    so the same app serves the same download by reads, byte-exact."""
    import subprocess
    import sys

    from tests.harness import REPO, free_port

    cert, key = self_signed(tmp_path)
    port = free_port()
    log = (tmp_path / "tls.log").open("wb")
    env = {**os.environ, "DOCPROXY_CONFIG": str(service.config_path)}
    process = subprocess.Popen(
        [sys.executable, "-c", TLS_SERVER, str(service.config_path), str(port), cert, key],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"https://127.0.0.1:{port}"
        assert wait_for(lambda: _answers(f"{base}/livez"), timeout=30)
        before = httpx.get(f"{base}/healthz", verify=False).json()["data"]
        response = httpx.get(
            f"{base}/download/big",
            headers={"Authorization": service.auth.partition(": ")[2]},
            verify=False,
            timeout=60,
        )
        after = httpx.get(f"{base}/healthz", verify=False).json()["data"]
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
    assert response.status_code == 200 and response.content == service.data
    assert after["completed"] == before["completed"] + 1
    assert after["zero_copy"] == before["zero_copy"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, verify=False, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
