"""Row 8: one ZIP archive of many local documents, against docproxy's own single download of
a file as big, taken in turns in the same run; and the memory one archive stream holds."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx

from bench.clients import BenchError, download, parallel_downloads
from bench.measure import (
    Bench,
    MiB,
    Row,
    RssSampler,
    Sender,
    fmt_cpu,
    fmt_rate,
    take_turns,
    verdict,
)
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy, make_file

TARGET = 0.8  # of docproxy's single-document download (row 1's docproxy figure)
MEMORY_PER_STREAM_MIB = 4.0
ARCHIVES_AT_ONCE = 8  # for the memory figure: enough to see growth per stream, seconds long


def archive_path(proxy: Docproxy, document_ids: list[str]) -> str:
    """The path and query of the archive link docproxy hands out for ``document_ids``."""
    response = httpx.post(
        f"{proxy.base_url}/download/zip",
        json={"document_ids": document_ids, "filename": "bench.zip"},
        headers={"Authorization": f"Bearer {proxy.token()}"},
        timeout=60,
    )
    if response.status_code != 200:
        raise BenchError(f"POST /download/zip: HTTP {response.status_code}: {response.text}")
    link = urlsplit(response.json()["data"]["download_url"])
    return f"{link.path}?{link.query}"


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    count, size = b.plan.zip_documents, b.plan.zip_size
    row = Row("8", f"one ZIP of {count} local {size // MiB} MiB documents (stored)")
    proxy = b.servers.require("docproxy", Docproxy)
    ids = []
    for index in range(count):
        key = f"zip-part-{index}-{size}.bin"
        if not (proxy.root / key).exists():
            make_file(proxy.root / key, size)
        proxy.register(f"zip-{index}", key, f"part-{index}.bin", size)
        ids.append(f"zip-{index}")
    path = archive_path(proxy, ids)
    # Warm-up (the page cache and the archive's code paths), which also gives its length.
    big = b.files["big"]
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    length = download(proxy.port, path)

    def archive() -> tuple[int, float]:
        started = time.perf_counter()
        received = download(proxy.port, path, expect=length)
        return received, time.perf_counter() - started

    def single() -> tuple[int, float]:
        started = time.perf_counter()
        received = download(proxy.port, "/download/big", auth, expect=big.size)
        return received, time.perf_counter() - started

    zipped = Sender("docproxy zip", proxy.pid, archive)
    one = Sender("docproxy single", proxy.pid, single)
    take_turns(b.plan.big_rounds, [zipped, one])
    ratio = zipped.rate / one.rate
    # Memory: several archives streamed at once, the growth of docproxy's RSS per stream.
    streams = min(b.plan.streams, ARCHIVES_AT_ONCE)
    with RssSampler(proxy.pid) as sampler:
        parallel_downloads(streams, proxy.port, path, {}, length)
    growth = (sampler.peak_kib - sampler.start_kib) / 1024 / streams
    row.docproxy = (
        f"{fmt_rate(zipped.rate)}; RSS +{growth:.1f} MiB per archive stream ({streams} at once)"
    )
    row.cpu = fmt_cpu(zipped.cpu_per_gb, one.cpu_per_gb, None)
    row.baseline = f"docproxy single {big.size // MiB} MiB {fmt_rate(one.rate)}"
    row.ratio = f"{ratio:.2f}"
    row.target = f">= {TARGET} of a single download; <= {MEMORY_PER_STREAM_MIB:g} MiB/stream"
    row.met = verdict(ratio >= TARGET and growth <= MEMORY_PER_STREAM_MIB)
    return [row]


GROUP = RowGroup(needs={"8": needs("docproxy")}, measure=measure)
