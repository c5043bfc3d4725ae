"""Rows 1, 2 and 2w: big downloads from the local backend, one at a time and many at once,
against nginx (sendfile) and rclone serve http, with the CPU each server spent per GB sent."""

from __future__ import annotations

from collections.abc import Callable

from bench.clients import parallel_downloads
from bench.measure import (
    Bench,
    MiB,
    Row,
    RssSampler,
    Sender,
    fmt_cpu,
    fmt_rate,
    take_turns,
    timed_download,
    verdict,
)
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy, Nginx, Rclone

TARGET = 0.85  # of nginx, each with one worker
TARGET_TWO_WORKERS = 0.9  # of nginx with as many workers
MEMORY_PER_DOWNLOAD_MIB = 3.0

Transfer = Callable[[int, str, dict[str, str]], tuple[int, float]]


def senders(
    b: Bench,
    transfer: Transfer,
    proxy: Docproxy,
    nginx: Nginx | None,
    rclone: Rclone | None,
) -> tuple[Sender, Sender | None, Sender | None]:
    """docproxy, nginx and rclone fetching the same big file, each the way it is addressed."""
    key = b.files["big"].key
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    ours = Sender("docproxy", proxy.pid, lambda: transfer(proxy.port, "/download/big", auth))
    baseline = peer = None
    if nginx is not None:
        label = "nginx" if nginx.workers == 1 else f"nginx, {nginx.workers} workers,"
        baseline = Sender(label, nginx.pid, lambda: transfer(nginx.port, f"/files/{key}", {}))
    if rclone is not None:
        peer = Sender(
            "rclone", rclone.pid, lambda: transfer(rclone.port, f"/{key}", rclone.headers())
        )
    return ours, baseline, peer


def compare(
    b: Bench, row: Row, ours: Sender, baseline: Sender | None, peer: Sender | None, goal: float
) -> bool | None:
    """Fill the row's figures; whether docproxy reached ``goal`` of the baseline (None: no
    baseline to compare with)."""
    row.docproxy = fmt_rate(ours.rate)
    row.cpu = fmt_cpu(
        ours.cpu_per_gb,
        baseline.cpu_per_gb if baseline else None,
        peer.cpu_per_gb if peer else None,
    )
    if peer is not None:
        ratio = f" ({peer.rate / baseline.rate:.2f})" if baseline else ""
        row.peer = fmt_rate(peer.rate) + ratio
    if baseline is None:
        return None
    row.baseline = f"{baseline.name} {fmt_rate(baseline.rate)}"
    row.ratio = f"{ours.rate / baseline.rate:.2f}"
    return ours.rate / baseline.rate >= goal


def one_stream(b: Bench) -> Row:
    row = Row("1", f"one {b.plan.big // MiB} MiB download, local backend")
    size = b.files["big"].size
    rclone = b.servers.get("rclone", Rclone)

    def transfer(port: int, path: str, headers: dict[str, str]) -> tuple[int, float]:
        return timed_download(port, path, headers, size)

    ours, baseline, peer = senders(
        b, transfer, b.servers.require("docproxy", Docproxy), b.servers.get("nginx", Nginx), rclone
    )
    take_turns(b.plan.big_rounds, [s for s in (ours, baseline, peer) if s])
    met = compare(b, row, ours, baseline, peer, TARGET)
    if rclone is None:
        row.peer = b.servers.why_missing("rclone")
    if met is None:
        return row.skip(f"{b.servers.why_missing('nginx')}: no baseline")
    row.target, row.met = f">= {TARGET} of nginx", verdict(met)
    return row


def many_streams(b: Bench) -> Row:
    n = b.plan.streams
    row = Row("2", f"{n} concurrent {b.plan.big // MiB} MiB downloads: aggregate, peak RSS")
    size = b.files["big"].size
    proxy = b.servers.require("docproxy", Docproxy)
    rclone = b.servers.get("rclone", Rclone)
    samplers: list[RssSampler] = []

    def transfer(port: int, path: str, headers: dict[str, str]) -> tuple[int, float]:
        return parallel_downloads(n, port, path, headers, size)

    ours, baseline, peer = senders(b, transfer, proxy, b.servers.get("nginx", Nginx), rclone)
    unsampled = ours.transfer

    def sampled() -> tuple[int, float]:  # docproxy's rounds also record its peak memory
        with RssSampler(proxy.pid) as sampler:
            result = unsampled()
        samplers.append(sampler)
        return result

    ours.transfer = sampled
    take_turns(b.plan.stream_rounds, [s for s in (ours, baseline, peer) if s])
    met = compare(b, row, ours, baseline, peer, TARGET)
    if rclone is None:
        row.peer = b.servers.why_missing("rclone")
    peak = max(s.peak_kib for s in samplers)
    per_download = max((s.peak_kib - s.start_kib) for s in samplers) / n / 1024
    row.docproxy += f"; peak RSS {peak / 1024:.0f} MiB ({per_download:.1f} MiB/download)"
    memory_ok = per_download <= MEMORY_PER_DOWNLOAD_MIB
    if met is None:
        row.target, row.met = f"<= {MEMORY_PER_DOWNLOAD_MIB:g} MiB/download", verdict(memory_ok)
        row.note = f"{b.servers.why_missing('nginx')}: no throughput baseline"
        return row
    row.target = f">= {TARGET} of nginx; <= {MEMORY_PER_DOWNLOAD_MIB:g} MiB/download"
    row.met = verdict(met and memory_ok)
    return row


def many_streams_two_workers(b: Bench) -> Row:
    n = b.plan.streams
    row = Row("2w", f"{n} concurrent {b.plan.big // MiB} MiB downloads, 2 workers: aggregate")
    size = b.files["big"].size

    def transfer(port: int, path: str, headers: dict[str, str]) -> tuple[int, float]:
        return parallel_downloads(n, port, path, headers, size)

    proxy = b.servers.require("docproxy-2w", Docproxy)
    ours, baseline, _ = senders(b, transfer, proxy, b.servers.get("nginx-2w", Nginx), None)
    take_turns(b.plan.stream_rounds, [s for s in (ours, baseline) if s])
    met = compare(b, row, ours, baseline, None, TARGET_TWO_WORKERS)
    if met is None:
        return row.skip(f"{b.servers.why_missing('nginx-2w')}: no baseline")
    row.target, row.met = f">= {TARGET_TWO_WORKERS} of nginx", verdict(met)
    return row


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    rows = []
    if "1" in selected:
        rows.append(one_stream(b))
    if "2" in selected:
        rows.append(many_streams(b))
    if "2w" in selected:
        rows.append(many_streams_two_workers(b))
    return rows


GROUP = RowGroup(
    needs={
        "1": needs("docproxy", "nginx", "rclone"),
        "2": needs("docproxy", "nginx", "rclone"),
        "2w": needs("docproxy-2w", "nginx-2w"),
    },
    measure=measure,
)
