"""S3's fast read: a presigned ranged GET received straight into chunk buffers.

Against moto: any span, the threshold, the fall back to the SDK. Against a scripted socket
server: every answer the plain GET does not expect is ``Unexpected`` before the first chunk
(the SDK's turn), and a body cut short after that, or a silent server, is a ``StorageError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit

import pytest

from backends.base import ObjectChanged, ObjectNotFound, StorageError
from backends.ranged_get import Unexpected, _RangeReceiver, ranged_get
from backends.s3 import S3Backend
from proxy.config.section import Section
from tests.cloud_servers import Store, new_bucket, opened_backend

CHUNK = 4096
BODY = os.urandom(5 * CHUNK + 123)
SPANS = [(0, len(BODY)), (1, CHUNK + 1), (CHUNK, 3 * CHUNK), (len(BODY) - 5, len(BODY))]


@asynccontextmanager
async def s3_backend(stores, **options: object) -> AsyncIterator[S3Backend]:
    store: Store = stores["s3"]
    bucket = new_bucket(store)
    store.put(bucket, "fast/object.bin", BODY)
    async with opened_backend(store, bucket, chunk_size=CHUNK, **options) as backend:
        yield backend


async def chunks_of(backend: S3Backend, key: str, start: int, end: int) -> list[bytes]:
    return [chunk async for chunk in backend.stream_range(key, start, end)]


async def test_fast_reads_return_any_span_in_full_chunks(stores):
    async with s3_backend(stores, fast_read_min_size=0) as backend:
        assert backend.options.fast_read_min_size == 0
        for start, end in SPANS:
            chunks = await chunks_of(backend, "fast/object.bin", start, end)
            assert b"".join(chunks) == BODY[start:end]
            assert all(len(chunk) == CHUNK for chunk in chunks[:-1])
            # Received into the chunk itself: a bytearray, not the SDK's bytes.
            assert all(type(chunk) is bytearray for chunk in chunks)
        with pytest.raises(ObjectNotFound):  # moto's 404: the SDK's answer
            await chunks_of(backend, "fast/absent.bin", 0, 10)


async def test_spans_below_the_threshold_and_switched_off_read_through_the_sdk(stores):
    for options in ({"fast_read_min_size": "1MiB"}, {"fast_read_min_size": False}):
        async with s3_backend(stores, **options) as backend:
            chunks = await chunks_of(backend, "fast/object.bin", 0, len(BODY))
            assert b"".join(chunks) == BODY
            assert all(type(chunk) is bytes for chunk in chunks)


async def test_the_default_threshold_is_8_mib(stores):
    async with s3_backend(stores) as backend:
        assert backend.options.fast_read_min_size == 8 * 1024 * 1024


async def test_an_unexpected_answer_is_read_again_through_the_sdk(stores, monkeypatch):
    async with s3_backend(stores, fast_read_min_size=0) as backend:
        real = backend._fast_read_url
        # The plain GET meets a 404 (another key): the SDK reads the right one.
        monkeypatch.setattr(
            backend, "_fast_read_url", lambda key, n, v=None: real("fast/nothing", n, v)
        )
        chunks = await chunks_of(backend, "fast/object.bin", 2, len(BODY))
        assert b"".join(chunks) == BODY[2:]
        assert all(type(chunk) is bytes for chunk in chunks)


def test_fast_read_min_size_config_errors_name_the_key():
    errors: list[str] = []
    section = Section({"bucket": "b", "fast_read_min_size": "lots"}, "storage.backends.s3", errors)
    S3Backend.parse_options(section)
    assert errors == [
        "storage.backends.s3.fast_read_min_size: must be a byte size such as 1048576 or '1MiB' "
        "(got 'lots')"
    ]


# -- ranged_get against a scripted server --------------------------------------------------------


class ServerURL(str):
    """The URL of a scripted server, with the requests it received."""

    requests: list[bytes]


@contextmanager
def scripted_server(
    script: Callable[[socket.socket], None], target: str = "/bucket/key?X-Amz-Signature=abc"
) -> Iterator[ServerURL]:
    """A one-connection HTTP server on a free loopback port that runs ``script``."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = ServerURL(f"http://127.0.0.1:{listener.getsockname()[1]}{target}")
    url.requests = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            url.requests.append(request)
            script(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        listener.close()
        thread.join(timeout=5)


def head(status: str, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read(url: str, start: int, end: int, timeout: float = 5) -> list[bytearray]:
    return [c async for c in ranged_get(url, start, end, chunk_size=CHUNK, timeout=timeout)]


async def test_a_body_arriving_in_odd_pieces_fills_whole_chunks():
    data = BODY[100 : 100 + 3 * CHUNK + 7]

    def script(connection: socket.socket) -> None:
        # The head and the first body bytes in one packet, then pieces across chunk borders.
        connection.sendall(head("206 Partial Content", Content_Length=str(len(data))) + data[:10])
        for offset in range(10, len(data), 3000):
            connection.sendall(data[offset : offset + 3000])

    with scripted_server(script) as url:
        chunks = await read(url, 100, 100 + len(data))
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, CHUNK, 7]


async def test_the_request_names_the_range_and_the_presigned_target():
    def script(connection: socket.socket) -> None:
        connection.sendall(head("206 Partial Content", Content_Length="3") + b"abc")

    with scripted_server(script, "/b/k%20x?X-Amz-Expires=300&X-Amz-Signature=s") as url:
        assert b"".join(await read(url, 7, 10)) == b"abc"
    (request,) = url.requests
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /b/k%20x?X-Amz-Expires=300&X-Amz-Signature=s HTTP/1.1"
    assert f"Host: {urlsplit(url).netloc}" in lines
    assert "Range: bytes=7-9" in lines


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (head("403 Forbidden", Content_Length="9") + b"<Error/>\n", "HTTP 403"),
        (head("301 Moved Permanently", Location="https://elsewhere/"), "HTTP 301"),
        (head("206 Partial Content", Transfer_Encoding="chunked") + b"5\r\nabcde\r\n0\r\n\r\n",
         "Transfer-Encoding"),
        (head("206 Partial Content", Content_Length="4") + b"abcd", "Content-Length '4'"),
        (head("206 Partial Content"), "Content-Length None"),
        (head("200 OK", Content_Length="5") + b"abcde", "ignored the Range"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 206 Partial", "closed before the response head"),
    ],
)  # fmt: skip
async def test_answers_other_than_a_plain_body_are_unexpected(answer, reason):
    def script(connection: socket.socket) -> None:
        connection.sendall(answer)
        connection.shutdown(socket.SHUT_WR)

    with scripted_server(script) as url, pytest.raises(Unexpected, match=reason):
        await read(url, 5, 10)


async def test_a_silent_server_is_a_storage_error_after_the_timeout():
    """Not the SDK's turn: it would wait as long again for the same silent store."""
    release = threading.Event()

    def script(connection: socket.socket) -> None:
        release.wait(5)

    with scripted_server(script) as url:
        with pytest.raises(StorageError, match=r"the store did not answer within 0\.3s"):
            await read(url, 0, 10, timeout=0.3)
        release.set()


async def test_a_body_cut_short_is_a_storage_error_after_the_chunks_received():
    data = BODY[: 2 * CHUNK + 50]

    def script(connection: socket.socket) -> None:
        connection.sendall(head("206 Partial Content", Content_Length=str(len(BODY))) + data)

    with scripted_server(script) as url:
        chunks = ranged_get(url, 0, len(BODY), chunk_size=CHUNK, timeout=5)
        assert await anext(chunks) == data[:CHUNK]
        assert await anext(chunks) == data[CHUNK : 2 * CHUNK]
        with pytest.raises(StorageError, match=f"{len(BODY) - 2 * CHUNK} bytes to go"):
            await anext(chunks)


async def test_a_stalled_body_is_a_storage_error_after_the_timeout():
    release = threading.Event()

    def script(connection: socket.socket) -> None:
        connection.sendall(head("206 Partial Content", Content_Length="20000") + BODY[:CHUNK])
        release.wait(5)

    with scripted_server(script) as url:
        chunks = ranged_get(url, 0, 20000, chunk_size=CHUNK, timeout=0.3)
        assert await anext(chunks) == BODY[:CHUNK]
        with pytest.raises(StorageError, match=r"no data from the store for 0\.3s"):
            await anext(chunks)
        release.set()
        await chunks.aclose()


async def test_an_unreachable_store_is_unexpected():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(Unexpected, match="cannot reach the store"):
        await read(f"http://127.0.0.1:{port}/b/k", 0, 10)


class RecordingTransport:
    """Stands in for the socket transport: records what the receiver asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def close(self) -> None:
        self.calls.append("close")


def feed(receiver: _RangeReceiver, data: bytes) -> None:
    """What the event loop does with bytes from the socket: into the receiver's buffers."""
    while data:
        with receiver.get_buffer(-1) as buffer:
            n = min(len(buffer), len(data))
            buffer[:n] = data[:n]
        receiver.buffer_updated(n)
        data = data[n:]


async def test_reading_pauses_while_a_chunk_waits_and_resumes_when_it_is_taken():
    receiver = _RangeReceiver(4 * CHUNK, CHUNK)
    transport = RecordingTransport()
    receiver.connection_made(transport)  # type: ignore[arg-type]
    feed(receiver, head("206 Partial Content", Content_Length=str(4 * CHUNK)) + BODY[:CHUNK])
    assert transport.calls == ["pause"]  # one chunk waits, nobody takes it: no second one
    assert await receiver.next_chunk(1) == BODY[:CHUNK]
    assert transport.calls == ["pause", "resume"]
    # A consumer already waiting takes the next chunk at once: no pause for it.
    waiting = asyncio.ensure_future(receiver.next_chunk(1))
    await asyncio.sleep(0)
    feed(receiver, BODY[CHUNK : 2 * CHUNK])
    assert await waiting == BODY[CHUNK : 2 * CHUNK]
    assert transport.calls == ["pause", "resume"]
    feed(receiver, BODY[2 * CHUNK : 4 * CHUNK])  # two at once: paused after the first
    assert transport.calls == ["pause", "resume", "pause"]
    assert await receiver.next_chunk(1) == BODY[2 * CHUNK : 3 * CHUNK]
    assert await receiver.next_chunk(1) == BODY[3 * CHUNK : 4 * CHUNK]
    assert await receiver.next_chunk(1) is None


async def test_a_head_with_several_chunks_of_body_behind_it_is_split_into_chunks():
    receiver = _RangeReceiver(2 * CHUNK + 9, CHUNK)
    receiver.connection_made(RecordingTransport())  # type: ignore[arg-type]
    data = BODY[: 2 * CHUNK + 9]
    feed(receiver, head("206 Partial Content", Content_Length=str(len(data))) + data)
    chunks = [await receiver.next_chunk(1) for _ in range(4)]
    assert chunks[:3] == [data[:CHUNK], data[CHUNK : 2 * CHUNK], data[2 * CHUNK :]]
    assert chunks[3] is None


async def test_the_store_closing_while_the_last_chunk_is_sent_logs_nothing(caplog):
    """The store closes its connection once the range is sent; the loop reads that close
    into the receiver's buffer while the last chunk is still being sent to a slow client."""
    data = BODY[: 2 * CHUNK]
    closed = threading.Event()

    def script(connection: socket.socket) -> None:
        connection.sendall(head("206 Partial Content", Content_Length=str(len(data))) + data)
        connection.shutdown(socket.SHUT_WR)
        closed.set()

    with scripted_server(script) as url:
        chunks = ranged_get(url, 0, len(data), chunk_size=CHUNK, timeout=5)
        assert await anext(chunks) == data[:CHUNK]
        assert await anext(chunks) == data[CHUNK:]  # taking the last one resumes reading
        while not closed.is_set():
            await asyncio.sleep(0.01)
        for _ in range(20):  # the loop's turns while the last chunk goes out
            await asyncio.sleep(0.01)
        assert [c async for c in chunks] == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_bytes_past_the_range_are_a_storage_error():
    data = BODY[:CHUNK]

    def script(connection: socket.socket) -> None:
        connection.sendall(head("206 Partial Content", Content_Length=str(len(data))) + data)
        time.sleep(0.05)  # the extra bytes arrive after the range was complete
        connection.sendall(b"extra")

    with scripted_server(script) as url:
        chunks = ranged_get(url, 0, len(data), chunk_size=CHUNK, timeout=5)
        assert await anext(chunks) == data
        await asyncio.sleep(0.2)
        with pytest.raises(StorageError, match="more than the range"):
            await anext(chunks)


# -- pinned reads: the ETag from stat is sent as If-Match --------------------------------------


@pytest.mark.parametrize("fast_read_min_size", [0, False], ids=["fast-read", "sdk"])
async def test_an_object_replaced_after_stat_is_not_read(stores, fast_read_min_size):
    async with s3_backend(stores, fast_read_min_size=fast_read_min_size) as backend:
        info = await backend.stat("fast/object.bin")
        assert info.version == info.etag
        # Unchanged: read in full, pinned.
        chunks = backend.stream_range("fast/object.bin", 0, len(BODY), info.version)
        assert b"".join([c async for c in chunks]) == BODY
        store: Store = stores["s3"]
        store.put(backend.store.bucket, "fast/object.bin", BODY[::-1])  # same size, new bytes
        with pytest.raises(ObjectChanged):
            await chunks_of_pinned(backend, "fast/object.bin", 0, len(BODY), info.version)


async def chunks_of_pinned(backend, key, start, end, version) -> list[bytes]:
    return [chunk async for chunk in backend.stream_range(key, start, end, version)]
