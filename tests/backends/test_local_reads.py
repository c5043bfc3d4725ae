"""The local backend's fast reads keep the behaviour: symlinks out of the root are still
refused, cached pages are read on the event loop and the rest in worker threads."""

from __future__ import annotations

import asyncio
import os

import pytest

from backends.base import InvalidKey, ObjectChanged, ObjectNotFound
from backends.local import LocalBackend, LocalOptions


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


# -- pinned reads: a file rewritten after stat is never read as if it were the same ------------


def rewrite_in_place(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks


@pytest.mark.parametrize(
    "size", [100, 3 * CHUNK // 4, 5 * CHUNK + 17], ids=["inline", "one-read", "chunks"]
)
async def test_a_file_rewritten_after_stat_is_not_read(tmp_path, size):
    backend, _ = local_file(tmp_path, size)
    info = await backend.stat("big.bin")
    rewrite_in_place(tmp_path / "big.bin", 0, b"X")
    with pytest.raises(ObjectChanged):
        async for _ in backend.stream_range("big.bin", 0, size, info.version):
            pass


async def test_a_file_replaced_by_one_of_the_same_size_and_time_is_not_read(tmp_path):
    backend, data = local_file(tmp_path)
    info = await backend.stat("big.bin")
    st = os.stat(tmp_path / "big.bin")
    (tmp_path / "new.bin").write_bytes(os.urandom(len(data)))
    os.utime(tmp_path / "new.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(tmp_path / "new.bin", tmp_path / "big.bin")  # only the inode tells
    with pytest.raises(ObjectChanged):
        async for _ in backend.stream_range("big.bin", 0, len(data), info.version):
            pass


async def test_a_rewrite_midway_stops_the_read_before_any_new_byte(tmp_path):
    backend, data = local_file(tmp_path)
    info = await backend.stat("big.bin")
    chunks = backend.stream_range("big.bin", 0, len(data), info.version)
    first = await anext(chunks)
    rewrite_in_place(tmp_path / "big.bin", len(first), b"new bytes")
    with pytest.raises(ObjectChanged):
        await anext(chunks)
    assert bytes(first) == data[: len(first)]
    await chunks.aclose()


async def test_an_unchanged_file_reads_in_full_when_pinned(tmp_path):
    backend, data = local_file(tmp_path)
    info = await backend.stat("big.bin")
    chunks = [c async for c in backend.stream_range("big.bin", 0, len(data), info.version)]
    assert b"".join(chunks) == data
