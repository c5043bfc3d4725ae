"""Row 1b: the big download through nginx, docproxy answering with X-Accel-Redirect."""

from __future__ import annotations

from bench.measure import Bench, Row, alternate, fmt_rate, one_stream, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy, Nginx


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    row = Row("1b", "same, nginx in front, docproxy answers X-Accel-Redirect")
    nginx = b.servers.get("nginx", Nginx)
    accel = b.servers.get("docproxy-accel", Docproxy)
    if nginx is None:
        return [row.skip(b.servers.why_missing("nginx"))]
    if accel is None:
        return [row.skip(b.servers.why_missing("docproxy-accel"))]
    big = b.files["big"]
    auth = {"Authorization": f"Bearer {accel.token()}"}
    ours, theirs = alternate(
        b.plan.big_rounds,
        lambda: one_stream(nginx.front_port, "/download/big", auth, big.size),
        lambda: one_stream(nginx.port, f"/files/{big.key}", {}, big.size),
    )
    row.docproxy, row.baseline = fmt_rate(ours), f"nginx {fmt_rate(theirs)}"
    row.ratio, row.target, row.met = f"{ours / theirs:.2f}", "≈ 1", verdict(ours / theirs >= 0.8)
    return [row]


GROUP = RowGroup(needs={"1b": needs("docproxy-accel", "nginx")}, measure=measure)
