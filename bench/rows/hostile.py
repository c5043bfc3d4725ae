"""Row 3h: row 3's 10 KiB rate while hostile clients are held open (200 idle connections, 50
one-byte-a-second senders, one endless header), against row 3's rate in the same rounds, and
docproxy's memory growth meanwhile."""

from __future__ import annotations

import threading
import time

from bench.attackers import Attack
from bench.clients import LoadResult, load
from bench.measure import Bench, Row, fmt_load, median_load, rss_kib, verdict
from bench.rows.base import RowGroup, needs
from bench.servers import Docproxy

GOAL_RATIO = 0.8  # of row 3's rate, measured in the same run
GOAL_RSS_MIB = 50


class PeakRss:
    """The highest resident memory of a process, sampled every 0.1 s between start and stop."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kib = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._done.clear()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            self.kib = max(self.kib, rss_kib(self.pid))
            time.sleep(0.1)


def measure(b: Bench, selected: frozenset[str]) -> list[Row]:
    c = b.plan.connections
    proxy = b.servers.require("docproxy", Docproxy)
    auth = {"Authorization": f"Bearer {proxy.token()}"}

    def run() -> LoadResult:
        return load(
            proxy.port, "GET", "/download/small", auth, connections=c, seconds=b.plan.load_seconds
        )

    before = rss_kib(proxy.pid)
    peak = PeakRss(proxy.pid)
    plain: list[LoadResult] = []
    attacked: list[LoadResult] = []
    attack = Attack(proxy.port)  # the last round's, for its counts
    for _ in range(b.plan.load_rounds):
        plain.append(run())
        attack = Attack(proxy.port).start()
        time.sleep(1)  # every attacker connected
        peak.start()
        try:
            attacked.append(run())
        finally:
            peak.stop()
            attack.stop()
    ours, base = median_load(attacked), median_load(plain)
    ratio = ours.requests_per_second / base.requests_per_second
    growth = (max(peak.kib, before) - before) / 1024
    row = Row(
        "3h",
        f"same as 3 under 200 idle, 50 one-byte/s and 1 endless-header conns, {c} conns",
    )
    row.docproxy = f"{fmt_load(ours)}; RSS +{growth:.1f} MiB"
    row.baseline = f"row 3 alone, {fmt_load(base)}"
    row.ratio = f"{ratio:.2f}"
    row.target = f">= {GOAL_RATIO} x row 3; RSS < +{GOAL_RSS_MIB} MiB"
    row.met = verdict(ratio >= GOAL_RATIO and growth < GOAL_RSS_MIB and not ours.errors)
    row.note = f"{attack.reopened} attack conns closed by docproxy and reopened (last round)"
    if ours.errors:
        b.failures.append(f"row 3h: {ours.errors} failed requests")
    return [row]


GROUP = RowGroup(needs={"3h": needs("docproxy")}, measure=measure)
