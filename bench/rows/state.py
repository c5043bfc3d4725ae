"""Rows 3r and 4r: rows 3 and 4 with the shared state in Redis (nothing revoked, no limits)
against the same docproxy without it, measured in alternating rounds."""

from __future__ import annotations

from collections.abc import Callable

from bench.clients import LoadResult, load
from bench.measure import Bench, Row, fmt_load, median_load, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy

GOAL = 0.9  # Redis configured keeps this much of the rate without it


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    plain = b.servers.require("docproxy", Docproxy)
    rows = []
    for number, what in (("3r", "GET /download (10 KiB)"), ("4r", "POST /download")):
        if number not in selected:
            continue
        row = Row(number, f"{what} with state.redis_url, {b.plan.connections} conns")
        shared = b.servers.get("docproxy-redis", Docproxy)
        if shared is None:
            rows.append(row.skip(b.servers.why_missing("docproxy-redis")))
            continue
        runs: dict[str, list[LoadResult]] = {"plain": [], "redis": []}
        contenders = {"plain": _loader(b, plain, number), "redis": _loader(b, shared, number)}
        for _ in range(b.plan.load_rounds):
            for name, run in contenders.items():
                runs[name].append(run())
        ours, theirs = median_load(runs["redis"]), median_load(runs["plain"])
        if ours.errors:
            b.failures.append(f"row {number}: {ours.errors} failed requests")
        ratio = ours.requests_per_second / theirs.requests_per_second
        row.docproxy = fmt_load(ours)
        row.baseline = "docproxy without Redis " + fmt_load(theirs)
        row.ratio = f"{ratio:.2f}"
        row.target = f">= {GOAL} of the rate without Redis"
        row.met = verdict(ratio >= GOAL and not ours.errors)
        rows.append(row)
    return rows


def _loader(b: Bench, server: Docproxy, number: str) -> Callable[[], LoadResult]:
    headers = {"Authorization": f"Bearer {server.token()}"}
    method, path, body = "GET", "/download/small", ""
    if number == "4r":
        method, path, body = "POST", "/download", '{"document_id":"small"}'
        headers["Content-Type"] = "application/json"
    c, seconds = b.plan.connections, b.plan.load_seconds
    return lambda: load(server.port, method, path, headers, body, connections=c, seconds=seconds)


GROUP = RowGroup(
    needs={"3r": needs("docproxy", "docproxy-redis"), "4r": needs("docproxy", "docproxy-redis")},
    measure=measure,
)
