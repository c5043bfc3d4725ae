"""Rows 4 and 4b: POST /download end to end (a local HMAC link; an S3 SigV4 URL against moto)
against a bare Starlette route returning the same JSON."""

from __future__ import annotations

from bench.clients import LoadResult, load
from bench.measure import Bench, Row, fmt_load, median_load, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy, MotoS3, StarletteBaseline

S3_ROW = "4b"


def presign_row(b: Bench, document_id: str, number: str, label: str, goal: int) -> Row:
    c = b.plan.connections
    row = Row(number, f"POST /download end to end, {label}, {c} conns")
    proxy = b.servers.require("docproxy", Docproxy)
    baseline = b.servers.require("starlette", StarletteBaseline)
    headers = {"Authorization": f"Bearer {proxy.token()}", "Content-Type": "application/json"}
    json_only = {"Content-Type": "application/json"}
    body = f'{{"document_id":"{document_id}"}}'
    seconds = b.plan.load_seconds
    ours_runs: list[LoadResult] = []
    theirs_runs: list[LoadResult] = []
    for _ in range(b.plan.load_rounds):
        ours_runs.append(
            load(proxy.port, "POST", "/download", headers, body, connections=c, seconds=seconds)
        )
        theirs_runs.append(
            load(
                baseline.port, "POST", "/download", json_only, body, connections=c, seconds=seconds
            )
        )
    ours, theirs = median_load(ours_runs), median_load(theirs_runs)
    if ours.errors:
        b.failures.append(f"row {number}: {ours.errors} failed requests")
    row.docproxy = fmt_load(ours)
    row.baseline = "bare Starlette " + fmt_load(theirs)
    row.ratio = f"{ours.requests_per_second / theirs.requests_per_second:.2f}"
    row.target = f">= {goal:,} req/s"
    row.met = verdict(ours.requests_per_second >= goal and not ours.errors)
    return row


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    rows = []
    if "4" in selected:
        rows.append(presign_row(b, "small", "4", "local HMAC link", 4000))
    if S3_ROW in selected:
        label = "S3 SigV4 (moto)"
        if b.servers.get("moto", MotoS3) is None:
            c = b.plan.connections
            what = f"POST /download end to end, {label}, {c} conns"
            rows.append(Row(S3_ROW, what).skip(b.servers.why_missing("moto")))
        else:
            rows.append(presign_row(b, "s3-small", S3_ROW, label, 2500))
    return rows


GROUP = RowGroup(
    needs={"4": needs("docproxy", "starlette"), S3_ROW: needs("docproxy", "starlette", "moto")},
    measure=measure,
)
