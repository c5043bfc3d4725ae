"""Pinned reads on Azure Blob (Azurite) and GCS (gcp-storage-emulator): ``stat``'s version is
sent with every ranged read, so a rewritten object is never read as the one stat described."""

from __future__ import annotations

import os

import pytest

from backends.base import ObjectChanged
from tests.cloud_servers import Store, new_bucket, opened_backend

BODY = os.urandom(50_000)
CHUNK = 8192


async def read_all(backend, key: str, start: int, end: int, version) -> bytes:
    return b"".join([chunk async for chunk in backend.stream_range(key, start, end, version)])


async def test_azure_blob_replaced_after_stat_is_not_read(stores):
    store: Store = stores["az"]
    bucket = new_bucket(store)
    store.put(bucket, "pinned.bin", BODY)
    async with opened_backend(store, bucket, chunk_size=CHUNK) as backend:
        info = await backend.stat("pinned.bin")
        assert info.version is not None and info.version == info.etag
        assert await read_all(backend, "pinned.bin", 3, len(BODY) - 5, info.version) == (BODY[3:-5])
        store.put(bucket, "pinned.bin", BODY[::-1])  # same size, new bytes
        with pytest.raises(ObjectChanged):
            await read_all(backend, "pinned.bin", 0, len(BODY), info.version)
        # Unpinned (and pinned to the new ETag) the new bytes are read.
        assert await read_all(backend, "pinned.bin", 0, len(BODY), None) == BODY[::-1]
        again = await backend.stat("pinned.bin")
        assert again.version != info.version
        assert await read_all(backend, "pinned.bin", 0, 10, again.version) == BODY[::-1][:10]


async def test_azure_blob_rewritten_midway_stops_the_stream(stores):
    store: Store = stores["az"]
    bucket = new_bucket(store)
    store.put(bucket, "midway.bin", BODY)
    async with opened_backend(store, bucket, chunk_size=CHUNK) as backend:
        info = await backend.stat("midway.bin")
        chunks = backend.stream_range("midway.bin", 0, len(BODY), info.version)
        first = await anext(chunks)
        assert first == BODY[: len(first)]
        store.put(bucket, "midway.bin", os.urandom(len(BODY)))
        received = first
        with pytest.raises(ObjectChanged):
            async for chunk in chunks:  # at most the one chunk read ahead is old bytes
                received += chunk
        assert received == BODY[: len(received)] and len(received) < len(BODY)


async def test_gcs_reads_are_pinned_to_the_generation(stores):
    """The emulator neither checks ``ifGenerationMatch`` nor names the generation in its
    answers, so it can show only that stat's generation is the version, that it changes with
    a rewrite, and that pinned reads are accepted; the refusal is Google's (412)."""
    store: Store = stores["gcs"]
    bucket = new_bucket(store)
    store.put(bucket, "pinned.bin", BODY)
    async with opened_backend(store, bucket, chunk_size=CHUNK) as backend:
        info = await backend.stat("pinned.bin")
        assert info.version and str(info.version).isdigit()
        assert await read_all(backend, "pinned.bin", 7, len(BODY), info.version) == BODY[7:]
        store.put(bucket, "pinned.bin", BODY[::-1])
        again = await backend.stat("pinned.bin")
        assert again.version != info.version
