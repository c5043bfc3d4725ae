"""The speed-ups on the request path keep the behaviour: cached tokens still expire, a locked
SQLite catalog is waited for off the event loop, symlinks out of the root are still refused."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import pytest

from backends.base import InvalidKey, ObjectNotFound
from backends.local import LocalBackend, LocalOptions
from proxy.auth import TokenAuthority, TokenRequest
from proxy.config import AuthConfig, ClientConfig
from proxy.errors import Unauthorized
from proxy.sqlite_reader import SQLiteReader


def authority(ttl: int) -> TokenAuthority:
    import hashlib

    client = ClientConfig("c", hashlib.sha256(b"s").digest())
    return TokenAuthority(AuthConfig(signing_key="k" * 32, token_ttl=ttl, clients=(client,)))


def test_a_cached_token_still_expires():
    tokens = authority(ttl=1)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, "a@b.c", "g"))
    assert tokens.verify(token).group_name == "g"
    assert tokens.verify(token).email == "a@b.c"  # from the cache
    time.sleep(2.1)
    with pytest.raises(Unauthorized):
        tokens.verify(token)


def test_a_token_not_yet_valid_becomes_valid():
    tokens = authority(ttl=60)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None), now=time.time() + 2)
    with pytest.raises(Unauthorized):
        tokens.verify(token)  # nbf/iat in the future; the signature is cached all the same
    time.sleep(2.2)
    assert tokens.verify(token).client_id == "c"


def test_a_tampered_token_is_refused_even_after_the_real_one_was_cached():
    tokens = authority(ttl=60)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None))
    tokens.verify(token)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        tokens.verify(forged)


def test_a_locked_sqlite_catalog_is_waited_for_in_a_thread(tmp_path):
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE d (id TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO d VALUES ('x', 'one')")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("UPDATE d SET v = 'two'")
    reader = SQLiteReader(str(path))

    async def lookup() -> tuple[str, float]:
        ticks = 0

        async def tick() -> None:  # the loop must keep running while the reader waits
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        row = await reader.fetch_one(
            "SELECT v FROM d WHERE id = :document_id", {"document_id": "x"}
        )
        ticker.cancel()
        return row["v"], ticks

    threading.Timer(0.5, lambda: (writer.execute("COMMIT"), writer.close())).start()
    value, ticks = asyncio.run(lookup())
    assert value == "two"
    assert ticks >= 20  # about 0.5 s of ticks: the wait did not block the event loop
    asyncio.run(reader.disconnect())


def test_symlinks_out_of_the_root_are_still_refused(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "in.txt").write_text("in")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "out.txt")
    os.symlink(tmp_path, root / "up")
    os.symlink(root / "sub" / "in.txt", root / "inside-link.txt")
    backend = LocalBackend("local", LocalOptions(root=root))

    async def check() -> None:
        await backend.open()
        assert (await backend.stat("sub/in.txt")).size == 2
        assert (await backend.stat("inside-link.txt")).size == 2
        for key in ("out.txt", "up/secret.txt"):
            with pytest.raises(InvalidKey):
                await backend.stat(key)
        with pytest.raises(ObjectNotFound):
            await backend.stat("sub")  # a folder is no object
        with pytest.raises(ObjectNotFound):
            await backend.stat("missing.txt")

    asyncio.run(check())


def test_presigned_urls_are_reused_only_within_the_margin():
    from proxy.service import PresignedUrlCache

    cache = PresignedUrlCache(margin=1)
    key = ("s3", "a.pdf", "application/pdf", 'attachment; filename="a.pdf"')
    cache.put(key, "https://store/a.pdf?sig=1")
    assert cache.get(key) == "https://store/a.pdf?sig=1"
    assert cache.get(("s3", "a.pdf", "text/plain", 'attachment; filename="a.pdf"')) is None
    time.sleep(1.1)
    assert cache.get(key) is None  # older than the margin: sign again
    off = PresignedUrlCache(margin=0)
    off.put(key, "https://store/a.pdf?sig=2")
    assert off.get(key) is None


# -- local reads: the page cache on the event loop, the rest in worker threads -----------------

CHUNK = 64 * 1024
SPANS = [(0, 5 * CHUNK + 17), (1, CHUNK + 2), (CHUNK - 3, 3 * CHUNK), (7, 70_000)]


def local_file(tmp_path, size: int = 5 * CHUNK + 17) -> tuple[LocalBackend, bytes]:
    data = os.urandom(size)
    (tmp_path / "big.bin").write_bytes(data)
    return LocalBackend("local", LocalOptions(root=tmp_path, chunk_size=CHUNK)), data


async def read_span(backend: LocalBackend, start: int, end: int) -> tuple[bytes, list[int]]:
    chunks = [chunk async for chunk in backend.stream_range("big.bin", start, end)]
    return b"".join(chunks), [len(chunk) for chunk in chunks]


def count_thread_calls(monkeypatch) -> list[object]:
    import backends.local

    calls: list[object] = []
    real = backends.local.anyio.to_thread.run_sync

    async def counting(function, *args):
        calls.append(function)
        return await real(function, *args)

    monkeypatch.setattr(backends.local.anyio.to_thread, "run_sync", counting)
    return calls


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="preadv2(RWF_NOWAIT) is Linux's")
async def test_a_cached_file_is_read_on_the_event_loop(tmp_path, monkeypatch):
    backend, data = local_file(tmp_path)
    calls = count_thread_calls(monkeypatch)
    for start, end in SPANS:
        calls.clear()
        body, sizes = await read_span(backend, start, end)
        assert body == data[start:end]
        assert all(size == CHUNK for size in sizes[:-1])
        assert [f.__name__ for f in calls] == ["_open_read_only"]  # and no read


async def test_without_rwf_nowait_every_chunk_is_read_in_a_thread(tmp_path, monkeypatch):
    backend, data = local_file(tmp_path)
    backend._read_cached_ok = False
    calls = count_thread_calls(monkeypatch)
    body, sizes = await read_span(backend, 0, len(data))
    assert body == data
    assert [f.__name__ for f in calls[1:]] == ["preadv"] * len(sizes)


async def test_a_file_system_refusing_rwf_nowait_falls_back_to_threads(tmp_path, monkeypatch):
    import errno

    backend, data = local_file(tmp_path)
    real_preadv = os.preadv

    def preadv(fd, buffers, offset, flags=0):
        if flags:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    for start, end in SPANS:
        assert (await read_span(backend, start, end))[0] == data[start:end]
    assert backend._read_cached_ok is False


async def test_a_partly_cached_chunk_is_completed_in_a_thread(tmp_path, monkeypatch):
    backend, data = local_file(tmp_path)
    backend._read_cached_ok = True
    real_preadv = os.preadv

    def preadv(fd, buffers, offset, flags=0):
        if flags:  # "only the first 1000 bytes are cached"
            (view,) = buffers
            return real_preadv(fd, [view[:1000]], offset)
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    for start, end in SPANS:
        body, sizes = await read_span(backend, start, end)
        assert body == data[start:end]
        assert all(size == CHUNK for size in sizes[:-1])


async def test_a_file_cut_short_mid_read_is_a_storage_error(tmp_path):
    from backends.base import StorageError

    backend, data = local_file(tmp_path)
    chunks = backend.stream_range("big.bin", 0, len(data))
    assert await anext(chunks) == data[:CHUNK]
    os.truncate(tmp_path / "big.bin", CHUNK + 100)
    assert await anext(chunks) == data[CHUNK : CHUNK + 100]
    with pytest.raises(StorageError, match="ended"):
        await anext(chunks)
    await chunks.aclose()


async def _messages(chunks: list[bytes], length: int) -> list[dict]:
    from proxy.streaming import DownloadResponse, StreamStats

    async def body():
        for chunk in chunks:
            yield chunk

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    response = DownloadResponse(
        body(),
        status_code=200,
        headers={"content-length": str(length)},
        length=length,
        stats=StreamStats(),
        label="'t'",
    )
    await response({"type": "http", "method": "GET"}, receive, send)
    return sent


@pytest.mark.parametrize(
    "chunks",
    [[b"x" * 10], [b"a" * 70_000, b"b" * 70_000, b"c" * 5]],
    ids=["one-chunk", "three-chunks"],
)
async def test_the_chunk_that_completes_the_body_is_the_last_message(chunks):
    sent = await _messages(chunks, sum(map(len, chunks)))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["headers"] == [(b"content-length", str(sum(map(len, chunks))).encode())]
    bodies = sent[1:]
    assert [m["body"] for m in bodies] == chunks  # no empty message after the last chunk
    assert [m["more_body"] for m in bodies] == [True] * (len(chunks) - 1) + [False]


async def test_an_empty_body_still_ends_with_one_message():
    sent = await _messages([], 0)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_cached_token_keeps_the_leeway_on_both_sides(monkeypatch):
    import hashlib

    client = ClientConfig("c", hashlib.sha256(b"s").digest())
    tokens = TokenAuthority(
        AuthConfig(signing_key="k" * 32, token_ttl=60, leeway=5, clients=(client,))
    )
    issued = 1_900_000_000
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None), now=issued)
    clock = {"now": issued - 5.0}  # nbf/iat 5 s ahead: inside the leeway
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    assert tokens.verify(token).client_id == "c"  # the full check
    for now, accepted in [
        (issued - 5.0, True),
        (issued - 6.0, False),  # before nbf - leeway
        (issued + 60 + 5.0, True),  # exp + leeway
        (issued + 60 + 6.0, False),  # past exp + leeway
        (issued + 30.0, True),  # and back inside: the refusals did not spoil the cache
    ]:
        clock["now"] = now
        if accepted:
            assert tokens.verify(token).client_id == "c"
        else:
            with pytest.raises(Unauthorized):
                tokens.verify(token)


async def test_a_counted_read_starts_on_the_first_chunk_and_closes_the_store_read():
    from backends.base import ObjectInfo
    from proxy.catalog import Document
    from proxy.service import CountedRead, ReadStats, ResolvedDocument

    closed: list[bool] = []

    class Store:
        name = "fake"

        async def stream_range(self, key, start, end):
            try:
                for offset in range(start, end, 4):
                    yield bytes(range(offset, min(offset + 4, end)))
            finally:
                closed.append(True)

    document = Document(id="d", file_path="k")
    resolved = ResolvedDocument(
        document=document,
        backend=Store(),  # type: ignore[arg-type]
        key="k",
        info=ObjectInfo(size=10),
        filename="k",
        content_type="application/octet-stream",
        content_disposition="attachment",
    )
    reads = ReadStats()
    never_iterated = CountedRead(reads, resolved, 0, 10)
    await never_iterated.aclose()
    assert reads == ReadStats()  # a HEAD or a 304: the store is not touched

    whole = CountedRead(reads, resolved, 0, 10)
    assert [chunk async for chunk in whole] == [bytes(range(4)), bytes(range(4, 8)), b"\x08\x09"]
    assert (reads.object_reads, reads.ranged_reads, reads.bytes_read) == (1, 0, 10)
    assert closed == [True]

    ranged = CountedRead(reads, resolved, 2, 9)
    assert await anext(ranged) == bytes(range(2, 6))
    await ranged.aclose()  # a client gone mid-body: the store's read ends now
    assert (reads.object_reads, reads.ranged_reads, reads.bytes_read) == (2, 1, 14)
    assert closed == [True, True]
