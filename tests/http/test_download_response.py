"""The ASGI messages of a download: the chunk that completes the body is the last message."""

from __future__ import annotations

import asyncio

import pytest


async def _messages(chunks: list[bytes], length: int) -> list[dict]:
    from proxy.documents.stats import DownloadStats
    from proxy.http.streaming import DownloadResponse

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
        stats=DownloadStats(),
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
