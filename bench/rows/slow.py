"""Row 5: slow clients on a big file; docproxy's memory must stay flat while they read."""

from __future__ import annotations

import threading
import time

from bench.clients import slow_download
from bench.measure import Bench, MiB, Row, rss_kib, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    n, seconds = b.plan.slow_clients, b.plan.slow_seconds
    row = Row(
        "5", f"{n} slow clients (1 MiB/s) on a {b.plan.big // MiB} MiB file for {seconds:g} s"
    )
    proxy = b.servers.require("docproxy", Docproxy)
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    pid = proxy.pid
    before = rss_kib(pid)
    samples: list[int] = []
    threads = [
        threading.Thread(
            target=slow_download, args=(proxy.port, "/download/big", auth, MiB, seconds)
        )
        for _ in range(n)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    while any(t.is_alive() for t in threads):
        samples.append(rss_kib(pid))
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    # Growth while the clients read, once the first third of the run has filled the
    # per-connection buffers and malloc's per-thread arenas (flat afterwards if bounded).
    settle = seconds / 3
    settled = [s for i, s in enumerate(samples) if i * 0.1 >= settle] or samples
    growth = (max(settled) - settled[0]) / 1024
    peak = (max(samples) - before) / 1024 if samples else 0.0
    row.docproxy = (
        f"RSS +{peak:.1f} MiB over idle ({peak / n:.1f} MiB/client); "
        f"+{growth:.1f} MiB from {settle:.1f} s to {time.perf_counter() - started:.0f} s"
    )
    row.target = "flat (<= 2 MiB); <= 3 MiB/client"
    row.met = verdict(growth <= 2.0 and peak / n <= 3.0)
    return [row]


GROUP = RowGroup(needs={"5": needs("docproxy")}, measure=measure)
