"""A document rewritten during its download: the connection is aborted, the client gets a
short body of the old bytes, never the old and new spliced together.

Local bodies read through Python (``download.sendfile: false``) here; by sendfile the cut body
may carry new bytes the kernel had queued, never a complete one (tests/http/test_sendfile.py)."""

from __future__ import annotations

import os
import socket
import time

from tests.harness import run_cli

MIB = 1024 * 1024
SIZE = 48 * MIB


def test_a_local_file_rewritten_midway_aborts_the_download(make_service, tmp_path):
    service = make_service({"download": {"sendfile": False}})
    data = os.urandom(SIZE)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    run_cli(service.config_path, "documents", "add", str(source), "--id", "big")
    [stored] = [p for p in (tmp_path / "files").rglob("*") if p.is_file()]
    token = service.token()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow reader
    sock.connect(("127.0.0.1", service.port))
    sock.sendall(
        f"GET /download/big HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    while len(body) < MIB:
        body += sock.recv(65536)

    with open(stored, "r+b") as f:  # in place: same inode, same size, new bytes
        f.write(os.urandom(SIZE))
    st = os.stat(stored)
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    reset = False
    try:
        while more := sock.recv(MIB):
            body += more
    except ConnectionResetError:
        reset = True
    finally:
        sock.close()
    assert len(body) < SIZE  # short: the client can tell
    old_only = body == data[: len(body)]  # (no pytest diff of megabytes on a failure)
    assert old_only, "new bytes in the body"
    deadline = time.monotonic() + 15
    while "aborted by storage" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "aborted by storage" in service.log()
    assert reset or len(body) < SIZE


def test_an_azure_blob_rewritten_midway_aborts_the_download(make_service, tmp_path, stores):
    from tests.backends.test_cloud_storage import Catalog, serve
    from tests.cloud_servers import new_bucket

    store = stores["az"]
    bucket = new_bucket(store)
    size = 16 * MIB
    data = os.urandom(size)
    store.put(bucket, "big.bin", data)
    catalog = Catalog(tmp_path / "operator.db")
    document_id = catalog.add(store.url(bucket, "big.bin"), title="big.bin")
    service = serve(make_service, catalog, {"cloud": store.backend(bucket)}, [store])
    token = service.token()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow reader
    sock.connect(("127.0.0.1", service.port))
    sock.sendall(
        f"GET /download/{document_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    while len(body) < MIB:
        body += sock.recv(65536)

    store.put(bucket, "big.bin", os.urandom(size))  # a new ETag, same size

    reset = False
    try:
        while more := sock.recv(MIB):
            body += more
    except ConnectionResetError:
        reset = True
    finally:
        sock.close()
    assert len(body) < size  # short: the client can tell
    old_only = body == data[: len(body)]  # (no pytest diff of megabytes on a failure)
    assert old_only, "new bytes in the body"
    deadline = time.monotonic() + 15
    while "aborted by storage" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "aborted by storage" in service.log()
    assert reset or len(body) < size
