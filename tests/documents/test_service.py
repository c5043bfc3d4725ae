"""The document service's own pieces: presigned URLs reused within the margin, and counted
reads that touch the store only once a body is sent."""

from __future__ import annotations

import time


def test_presigned_urls_are_reused_only_within_the_margin():
    from proxy.documents.service import PresignedUrlCache

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


async def test_a_counted_read_starts_on_the_first_chunk_and_closes_the_store_read():
    from backends.base import ObjectInfo
    from proxy.catalog.document import Document
    from proxy.documents.service import CountedRead, ResolvedDocument
    from proxy.documents.stats import DownloadStats

    closed: list[bool] = []

    class Store:
        name = "fake"

        async def stream_range(self, key, start, end, version=None):
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
    reads = DownloadStats()
    never_iterated = CountedRead(reads, resolved, 0, 10)
    await never_iterated.aclose()
    assert reads == DownloadStats()  # a HEAD or a 304: the store is not touched

    whole = CountedRead(reads, resolved, 0, 10)
    assert [chunk async for chunk in whole] == [bytes(range(4)), bytes(range(4, 8)), b"\x08\x09"]
    assert (reads.object_reads, reads.ranged_reads, reads.bytes_read) == (1, 0, 10)
    assert closed == [True]

    ranged = CountedRead(reads, resolved, 2, 9)
    assert await anext(ranged) == bytes(range(2, 6))
    await ranged.aclose()  # a client gone mid-body: the store's read ends now
    assert (reads.object_reads, reads.ranged_reads, reads.bytes_read) == (2, 1, 14)
    assert closed == [True, True]
