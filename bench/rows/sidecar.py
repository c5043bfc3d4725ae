"""Row 7: the light sidecar. One copy runs beside every application, so its idle cost is paid
many times: the embedded default (the repository's ``config.yaml``, one worker), started cold
several times: the time from exec to its first 200 on the liveness route, and the resident
memory of its whole process tree a moment after, idle."""

from __future__ import annotations

import socket
import time

from bench.clients import BenchError, http_request, read_head
from bench.measure import Bench, Row, median, tree_rss_kib, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import EmbeddedDefault, compile_bytecode

GOAL_RSS_MIB = 40
GOAL_READY_SECONDS = 0.4
LIVENESS = ("/livez", "/healthz")  # the first one the service has
START_TIMEOUT = 30.0


def probe(port: int, path: str) -> int | None:
    """The status of GET ``path``; None while nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(http_request("GET", path, {"Connection": "close"}))
            return read_head(sock)[0]
    except (OSError, BenchError):
        return None


def first_ok(sidecar: EmbeddedDefault, started: float) -> tuple[float, str]:
    """Poll until the liveness route answers 200: (seconds since ``started``, the route)."""
    routes = list(LIVENESS)
    while time.perf_counter() - started < START_TIMEOUT:
        if sidecar.exited():
            raise BenchError(f"the embedded default exited at start:\n{sidecar.log()}")
        status = probe(sidecar.port, routes[0])
        if status == 200:
            return time.perf_counter() - started, routes[0]
        if status == 404 and len(routes) > 1:
            routes.pop(0)  # not this service's route: the next one, at once
            continue
        time.sleep(0.005)
    raise BenchError(f"the embedded default answered no 200 within {START_TIMEOUT:g} s")


def cold_start(sidecar: EmbeddedDefault, idle_seconds: float) -> tuple[float, int, str]:
    """One start: (seconds from exec to the first 200, idle RSS in KiB, the route)."""
    started = time.perf_counter()
    pid = sidecar.spawn()
    try:
        ready, route = first_ok(sidecar, started)
        time.sleep(idle_seconds)
        return ready, tree_rss_kib(pid), route
    finally:
        sidecar.stop()


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    starts, idle = b.plan.starts, b.plan.idle_seconds
    row = Row(
        "7",
        f"light sidecar (embedded default, 1 worker): exec to first 200; idle RSS of the "
        f"process tree {idle:g} s later; median of {starts} start{'s' if starts > 1 else ''}",
    )
    compile_bytecode()
    folder = b.work / "sidecar"
    folder.mkdir()
    sidecar = EmbeddedDefault(folder)
    cold_start(sidecar, 0)  # not counted: creates ./var and brings the imports into page cache
    results = [cold_start(sidecar, idle) for _ in range(starts)]
    ready = median([r[0] for r in results])
    rss_mib = median([r[1] for r in results]) / 1024
    route = results[-1][2]
    row.docproxy = f"first 200 on {route} after {ready:.2f} s; idle RSS {rss_mib:.0f} MiB"
    row.target = f"<= {GOAL_READY_SECONDS:g} s; <= {GOAL_RSS_MIB} MiB"
    row.met = verdict(ready <= GOAL_READY_SECONDS and rss_mib <= GOAL_RSS_MIB)
    return [row]


GROUP = RowGroup(needs={"7": needs()}, measure=measure)
