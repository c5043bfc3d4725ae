"""The archive writer on its own, over the local backend: ZIP64 past 4 GiB, made cheaply from
a sparse file (no disk used), read back by zipfile and by Debian's unzip."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from backends.local import LocalBackend, LocalOptions
from proxy.documents.errors import StoreFailed
from proxy.documents.zipping import Entry, archive_chunks, archive_length

HUGE = 4 * 1024**3 + 64 * 1024**2 + 17


def entry(backend: LocalBackend, key: str, name: str, size: int) -> Entry:
    return Entry(name, size, 1_600_000_000.0, lambda: backend.stream_range(key, 0, size))


async def write_sparse(entries: list[Entry], target: Path) -> int:
    """The archive into ``target``, its zero chunks left as holes; the bytes produced."""
    produced = 0
    with target.open("wb") as out:
        async for chunk in archive_chunks(entries, compress=False):
            produced += len(chunk)
            if chunk.strip(b"\0"):
                out.write(chunk)
            else:
                out.seek(len(chunk), os.SEEK_CUR)
        out.truncate()
    return produced


@pytest.mark.slow  # reads and checks 4 GiB: about a minute idle, minutes on a busy machine
@pytest.mark.timeout(900)
async def test_an_archive_past_4_gib_is_zip64(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    with (root / "huge.bin").open("wb") as sparse:
        sparse.truncate(HUGE)
    (root / "after.txt").write_bytes(b"after the big one")
    backend = LocalBackend("local", LocalOptions(root=root))
    await backend.open()
    entries = [
        entry(backend, "huge.bin", "huge.bin", HUGE),
        entry(backend, "after.txt", "after.txt", 17),
    ]
    target = tmp_path / "huge.zip"
    produced = await write_sparse(entries, target)
    assert produced == archive_length(entries) == target.stat().st_size
    with zipfile.ZipFile(target) as archive:
        infos = archive.infolist()
        assert [(i.filename, i.file_size) for i in infos] == [("huge.bin", HUGE), ("after.txt", 17)]
        assert infos[1].header_offset > 4 * 1024**3  # only a ZIP64 record can say where it is
        assert archive.read("after.txt") == b"after the big one"
    result = subprocess.run(["unzip", "-t", str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


async def test_an_object_shorter_than_its_size_fails_the_archive(tmp_path):
    """The store stat'ed 100 bytes, then gives fewer: the archive must not end as a valid one."""
    (tmp_path / "short.bin").write_bytes(b"x" * 60)
    backend = LocalBackend("local", LocalOptions(root=tmp_path))
    await backend.open()
    entries = [Entry("short.bin", 100, None, lambda: backend.stream_range("short.bin", 0, 60))]
    with pytest.raises(StoreFailed, match="gave 60 bytes of 100"):
        async for _ in archive_chunks(entries, compress=False):
            pass
