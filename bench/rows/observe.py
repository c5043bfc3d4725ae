"""Rows 3o and 4o: what seeing inside costs. Row 3's 10 KiB downloads and row 4's
``POST /download`` against docproxy with metrics on and JSON logs with the audit trail, and
against the same server with both off, in alternating rounds of the same run."""

from __future__ import annotations

from collections.abc import Callable

from bench.clients import LoadResult, load
from bench.measure import Bench, Row, fmt_load, median_load, verdict
from bench.rows.base import RowGroup, needs

GOAL_RATIO = 0.9  # the observed server keeps at least this share of the plain one's rate
SERVERS = ("docproxy-plain", "docproxy-observed")


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    from bench.servers import Docproxy

    c, seconds = b.plan.connections, b.plan.load_seconds
    small = b.files["small"].document_id
    rows = []
    for number, label, method, path, body in (
        ("3o", "10 KiB documents (row 3)", "GET", f"/download/{small}", None),
        ("4o", "POST /download (row 4)", "POST", "/download", f'{{"document_id":"{small}"}}'),
    ):
        if number not in selected:
            continue
        runs: dict[str, list[LoadResult]] = {name: [] for name in SERVERS}
        loaders: dict[str, Callable[[], LoadResult]] = {}
        for name in SERVERS:
            proxy = b.servers.require(name, Docproxy)
            headers = {"Authorization": f"Bearer {proxy.token()}"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            loaders[name] = _loader(proxy.port, method, path, headers, body, c, seconds)
        for _ in range(b.plan.load_rounds):
            for name in SERVERS:
                runs[name].append(loaders[name]())
        plain, observed = (median_load(runs[name]) for name in SERVERS)
        ratio = observed.requests_per_second / plain.requests_per_second
        row = Row(number, f"{label}, metrics + JSON audit logs on, {c} conns")
        row.docproxy = fmt_load(observed)
        row.baseline = "both off " + fmt_load(plain)
        row.ratio = f"{ratio:.2f}"
        row.target = f">= {GOAL_RATIO} x both off"
        failed = observed.errors + plain.errors
        if failed:
            b.failures.append(f"row {number}: {failed} failed requests")
        row.met = verdict(ratio >= GOAL_RATIO and not failed)
        rows.append(row)
    return rows


def _loader(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: str | None,
    connections: int,
    seconds: float,
) -> Callable[[], LoadResult]:
    return lambda: load(
        port, method, path, headers, body or "", connections=connections, seconds=seconds
    )


GROUP = RowGroup(
    needs={
        "3o": needs("docproxy-plain", "docproxy-observed"),
        "4o": needs("docproxy-plain", "docproxy-observed"),
    },
    measure=measure,
)
