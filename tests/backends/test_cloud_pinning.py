"""Pinned reads on Azure Blob (Azurite) and GCS (gcp-storage-emulator): ``stat``'s version is
sent with every ranged read, so a rewritten object is never read as the one stat described."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    a rewrite, and that pinned reads are accepted (the refusal: ``conditional_front`` below)."""
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


@asynccontextmanager
async def conditional_front(emulator: str, *, name_generation: bool) -> AsyncIterator[str]:
    """A loopback front to the emulator that answers a media GET the way Google documents it
    and the emulator does not: 412 when ``ifGenerationMatch`` is not the object's generation,
    and (``name_generation``) the generation served in ``x-goog-generation``. The bytes and
    metadata are the emulator's."""
    from aiohttp import ClientSession, web

    session = ClientSession()

    async def relay(request: web.Request) -> web.StreamResponse:
        async with session.request(
            request.method, emulator + request.path_qs, headers=request.headers,
            data=await request.read(),
        ) as answer:  # fmt: skip
            body = await answer.read()
            headers = {
                k: v for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }  # fmt: skip
            status = answer.status
        wanted = request.query.get("ifGenerationMatch")
        if request.path.startswith("/download/") and (wanted or name_generation):
            metadata = request.path.removeprefix("/download")
            async with session.get(emulator + metadata) as found:
                generation = str((await found.json())["generation"])
            if wanted and wanted != generation:
                return web.json_response({"error": {"code": 412}}, status=412)
            if name_generation:
                headers["x-goog-generation"] = str(int(generation) + 1)  # as if rewritten
        return web.Response(body=body, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def test_gcs_read_sends_the_generation_and_a_412_is_a_change(stores):
    store: Store = stores["gcs"]
    bucket = new_bucket(store)
    store.put(bucket, "pinned.bin", BODY)
    emulator = store.backend(bucket)["endpoint_url"]
    async with (
        conditional_front(emulator, name_generation=False) as front,
        opened_backend(store, bucket, endpoint=front, chunk_size=CHUNK) as backend,
    ):
        info = await backend.stat("pinned.bin")
        assert await read_all(backend, "pinned.bin", 0, len(BODY), info.version) == BODY
        store.put(bucket, "pinned.bin", BODY[::-1])
        with pytest.raises(ObjectChanged):
            await read_all(backend, "pinned.bin", 0, len(BODY), info.version)


async def test_gcs_answer_of_another_generation_is_a_change(stores):
    store: Store = stores["gcs"]
    bucket = new_bucket(store)
    store.put(bucket, "pinned.bin", BODY)
    emulator = store.backend(bucket)["endpoint_url"]
    async with (
        conditional_front(emulator, name_generation=True) as front,
        opened_backend(store, bucket, endpoint=front, chunk_size=CHUNK) as backend,
    ):
        info = await backend.stat("pinned.bin")
        with pytest.raises(ObjectChanged):
            await read_all(backend, "pinned.bin", 0, len(BODY), info.version)
        # Unpinned reads do not look at it.
        assert await read_all(backend, "pinned.bin", 0, len(BODY), None) == BODY
