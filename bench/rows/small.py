"""Rows 3 and 3w: 10 KiB documents end to end (token check, catalog look-up) under load, with
one worker against nginx and rclone serve http, and with two workers against one."""

from __future__ import annotations

from collections.abc import Callable

from bench.clients import LoadResult, load
from bench.measure import Bench, KiB, Row, fmt_load, median_load, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy, Nginx, Rclone

GOAL_RATE = 4000  # req/s, one worker
GOAL_P99_MS = 20
GOAL_TWO_WORKERS = 1.5  # two workers' rate over one worker's, measured in the same rounds


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    c = b.plan.connections
    small = b.files["small"]
    proxy = b.servers.require("docproxy", Docproxy)
    auth = {"Authorization": f"Bearer {proxy.token()}"}

    def loader(port: int, path: str, headers: dict[str, str]) -> Callable[[], LoadResult]:
        return lambda: load(port, "GET", path, headers, connections=c, seconds=b.plan.load_seconds)

    # Each server once per round, in turn; the median round of each.
    contenders: dict[str, Callable[[], LoadResult]] = {
        "docproxy": loader(proxy.port, "/download/small", auth)
    }
    if "3w" in selected:
        two = b.servers.require("docproxy-2w", Docproxy)
        contenders["docproxy-2w"] = loader(two.port, "/download/small", auth)
    nginx, rclone = b.servers.get("nginx", Nginx), b.servers.get("rclone", Rclone)
    if "3" in selected and nginx is not None:
        contenders["nginx"] = loader(nginx.port, f"/files/{small.key}", {})
    if "3" in selected and rclone is not None:
        contenders["rclone"] = loader(rclone.port, f"/{small.key}", rclone.headers())
    runs: dict[str, list[LoadResult]] = {name: [] for name in contenders}
    for _ in range(b.plan.load_rounds):
        for name, run in contenders.items():
            runs[name].append(run())
    results = {name: median_load(results) for name, results in runs.items()}
    rows = []
    if "3" in selected:
        rows.append(one_worker(b, results))
    if "3w" in selected:
        rows.append(two_workers(b, results))
    return rows


def one_worker(b: Bench, results: dict[str, LoadResult]) -> Row:
    c = b.plan.connections
    row = Row("3", f"{b.plan.small // KiB} KiB documents end to end (token, catalog), {c} conns")
    ours = results["docproxy"]
    row.docproxy = fmt_load(ours)
    row.target = f">= {GOAL_RATE:,} req/s, p99 < {GOAL_P99_MS} ms"
    met = ours.requests_per_second >= GOAL_RATE and ours.p99_ms < GOAL_P99_MS and not ours.errors
    row.met = verdict(met)
    if ours.errors:
        b.failures.append(f"row 3: {ours.errors} failed requests")
    nginx, rclone = results.get("nginx"), results.get("rclone")
    if nginx is not None:
        row.baseline = "nginx " + fmt_load(nginx)
        row.ratio = f"{ours.requests_per_second / nginx.requests_per_second:.2f}"
    else:
        row.note = f"{b.servers.why_missing('nginx')}: no baseline"
    if rclone is not None:
        rate = rclone.requests_per_second
        ratio = f" ({rate / nginx.requests_per_second:.2f})" if nginx else ""
        row.peer = f"{rate:,.0f} req/s, p99 {rclone.p99_ms:.1f} ms{ratio}"
        if rclone.errors:
            b.failures.append(f"row 3: rclone answered {rclone.errors} requests with errors")
    else:
        row.peer = b.servers.why_missing("rclone")
    return row


def two_workers(b: Bench, results: dict[str, LoadResult]) -> Row:
    c = b.plan.connections
    row = Row("3w", f"same as 3, 2 workers, {c} conns")
    ours, one = results["docproxy-2w"], results["docproxy"]
    if ours.errors:
        b.failures.append(f"row 3w: {ours.errors} failed requests")
    gain = ours.requests_per_second / one.requests_per_second
    row.docproxy = fmt_load(ours)
    row.baseline = f"docproxy, 1 worker, {one.requests_per_second:,.0f} req/s"
    row.ratio = f"{gain:.2f}"
    row.target = f">= {GOAL_TWO_WORKERS} x 1 worker"
    row.met = verdict(gain >= GOAL_TWO_WORKERS and not ours.errors)
    return row


GROUP = RowGroup(
    needs={
        "3": needs("docproxy", "nginx", "rclone"),
        "3w": needs("docproxy", "docproxy-2w"),
    },
    measure=measure,
)
