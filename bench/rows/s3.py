"""Row 6: one download from S3 (moto) through docproxy against a direct s3fs read."""

from __future__ import annotations

import asyncio
import time

from bench.clients import BenchError
from bench.measure import Bench, MiB, Row, alternate, fmt_rate, one_stream, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import S3_BUCKET, Docproxy, MotoS3


async def _s3fs_read(endpoint: str, key: str) -> tuple[int, float]:
    """Read the object with s3fs: (bytes, seconds); the client set-up is not timed."""
    from s3fs import S3FileSystem

    fs = S3FileSystem(
        key="test",
        secret="test",
        endpoint_url=endpoint,
        asynchronous=True,
        config_kwargs={"signature_version": "s3v4"},
    )
    session = await fs.set_session()
    try:
        started = time.perf_counter()
        handle = await fs.open_async(f"{S3_BUCKET}/{key}", "rb", block_size=MiB)
        total = 0
        while chunk := await handle.read(MiB):  # short reads are not the end
            total += len(chunk)
        await handle.close()
        return total, time.perf_counter() - started
    finally:
        await session.close()


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    size = b.plan.s3_size
    row = Row("6", f"one {size // MiB} MiB download from S3 (moto)")
    moto = b.servers.get("moto", MotoS3)
    if moto is None:
        return [row.skip(b.servers.why_missing("moto"))]
    proxy = b.servers.require("docproxy", Docproxy)
    auth = {"Authorization": f"Bearer {proxy.token()}"}

    def direct() -> float:
        got, seconds = asyncio.run(_s3fs_read(moto.endpoint, "big.bin"))
        if got != size:
            raise BenchError(f"s3fs read {got} of {size} bytes")
        return size / seconds / 1e9

    ours, theirs = alternate(
        b.plan.s3_rounds,
        lambda: one_stream(proxy.port, "/download/s3-big", auth, size),
        direct,
    )
    row.docproxy, row.baseline = fmt_rate(ours), f"s3fs direct {fmt_rate(theirs)}"
    row.ratio, row.target = f"{ours / theirs:.2f}", ">= 0.9"
    row.met = verdict(ours / theirs >= 0.9)
    return [row]


GROUP = RowGroup(needs={"6": needs("docproxy", "moto")}, measure=measure)
