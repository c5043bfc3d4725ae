"""What every row measures with: the run's context, the table row, and the probes.

The probes read ``/proc``: resident memory and CPU time of a server's whole process tree
(uvicorn's supervisor and its workers, nginx's master and workers), so a server with more
processes is not flattered by reading one of them.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.clients import BenchError, LoadResult, download
from bench.servers import BenchFile

GiB = 1024**3
MiB = 1024**2
KiB = 1024
_TICKS = os.sysconf("SC_CLK_TCK")
_Server = TypeVar("_Server")


@dataclass(frozen=True)
class Plan:
    big: int
    small: int
    s3_size: int
    streams: int
    big_rounds: int
    stream_rounds: int
    s3_rounds: int  # row 6 rounds are short (~0.3 s): more of them, so one slow moment weighs less
    load_seconds: float
    load_rounds: int
    slow_clients: int
    slow_seconds: float
    starts: int  # row 7: cold starts of the sidecar
    idle_seconds: float  # row 7: how long after ready its idle memory is read
    connections: int = 32
    zip_documents: int = 20  # row 8: documents in one archive
    zip_size: int = 50 * MiB  # row 8: the size of each


@dataclass
class Row:
    number: str
    what: str
    docproxy: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    peer: str = "-"  # rclone serve http, the tool users would otherwise pick, and its ratio
    cpu: str = "-"  # CPU seconds per GB sent: docproxy / baseline / peer
    target: str = "-"
    met: str = "-"
    note: str = ""

    def skip(self, reason: str) -> Row:
        self.met = "skipped"
        self.note = reason
        return self


class Servers:
    """The servers this run started, by name, and why each missing one is missing."""

    def __init__(self) -> None:
        self.started: dict[str, object] = {}
        self.missing: dict[str, str] = {}

    def get(self, name: str, kind: type[_Server]) -> _Server | None:
        server = self.started.get(name)
        return server if isinstance(server, kind) else None

    def why_missing(self, name: str) -> str:
        return self.missing.get(name, f"{name} not started")

    def require(self, name: str, kind: type[_Server]) -> _Server:
        """The server, or BenchError saying why it is not there (the row fails)."""
        server = self.get(name, kind)
        if server is None:
            raise BenchError(self.why_missing(name))
        return server


@dataclass
class Bench:
    plan: Plan
    work: Path
    log: Callable[[str], None]
    servers: Servers = field(default_factory=Servers)
    rows: list[Row] = field(default_factory=list)
    files: dict[str, BenchFile] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# --- formatting ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_rate(gbps: float) -> str:
    return f"{gbps:.2f} GB/s"


def fmt_load(result: LoadResult) -> str:
    errors = f", {result.errors} errors" if result.errors else ""
    return (
        f"{result.requests_per_second:,.0f} req/s (p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms{errors})"
    )


def fmt_cpu(*per_gb: float | None) -> str:
    """CPU seconds per GB of each server in column order; "-" for one not measured."""
    return " / ".join("-" if value is None else f"{value:.2f}" for value in per_gb)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --- /proc probes ----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rpartition(")")[2].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now (from each process's parent in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone since the listing
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s tree so far: every thread of each live process
    (utime, stime) and the children each has reaped (cutime, cstime)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / _TICKS


def rss_kib(pid: int) -> int:
    """Resident memory of one process (all its threads), from /proc, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, summed, in KiB."""
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_kib(member)
        except OSError:
            continue
    return total


class RssSampler:
    """Peak resident memory of one process while a row runs, sampled every 10 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_kib = rss_kib(pid)
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))


@dataclass
class Sender:
    """One server sending big bodies round after round: its rates and the CPU it spent."""

    name: str
    pid: int
    transfer: Callable[[], tuple[int, float]]  # one round: (bytes received, seconds)
    rates: list[float] = field(default_factory=list)  # GB/s per round
    sent: int = 0
    cpu: float = 0.0

    def run(self) -> None:
        before = cpu_seconds(self.pid)
        sent, seconds = self.transfer()
        self.cpu += cpu_seconds(self.pid) - before
        self.sent += sent
        self.rates.append(sent / seconds / 1e9)

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.sent / 1e9)


def take_turns(rounds: int, senders: list[Sender]) -> None:
    """Each sender once per round, in turn, so a slow moment of the machine hits them alike."""
    for _ in range(rounds):
        for sender in senders:
            sender.run()


def timed_download(
    port: int, path: str, headers: Mapping[str, str], size: int
) -> tuple[int, float]:
    started = time.perf_counter()
    received = download(port, path, headers, expect=size)
    return received, time.perf_counter() - started


def one_stream(port: int, path: str, headers: Mapping[str, str], size: int) -> float:
    received, seconds = timed_download(port, path, headers, size)
    return received / seconds / 1e9


def alternate(rounds: int, first: Callable[[], float], second: Callable[[], float]) -> tuple:
    """Run two measurements in alternation; the median of each."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    return median(a), median(b)


def median_load(results: list[LoadResult]) -> LoadResult:
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    return ordered[len(ordered) // 2]
