"""docproxy's Prometheus instruments, made once per process, and whether they are on.

Labels name routes (the path template), backends, operations and reasons: never a document id,
a client or anything else a caller chooses, so the number of series stays bounded.

Counting sits on every download's path, so it adds to plain running totals (ints and floats,
found by the labels) with no lock and no call into prometheus-client: every count is made on the
event loop's one thread. ``flush`` copies the totals into the library's own value objects, which
its exposition reads unchanged in its single- and multiprocess modes alike: whenever a scrape
collects this process's registry and, with several workers, once a second from each worker's
event loop, so that a scrape answered by one worker sees the others' counts at most about a
second late.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

# Downloads last from milliseconds (10 KiB from page cache) to minutes (GiB to slow clients).
DOWNLOAD_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0)
# Store and catalog calls: sub-millisecond (local disk, cached rows) to the store timeout.
CALL_BUCKETS = (0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0)
FLUSH_INTERVAL = 1.0  # seconds: how stale another worker's counts may be on a scrape

# The histograms' upper bounds as prometheus-client keeps them (``+Inf`` last).
_DOWNLOAD_BOUNDS = (*DOWNLOAD_BUCKETS, float("inf"))
_CALL_BOUNDS = (*CALL_BUCKETS, float("inf"))


class Tally:
    """A counter's or gauge's running total (a gauge goes down with a negative amount)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total: float = 0

    def inc(self, amount: float = 1) -> None:
        self.total += amount

    def observe(self, amount: float) -> None:
        raise TypeError("a counter or gauge is not observed")


class Observations:
    """A histogram's running totals: one count per bucket (each observation in the first bucket
    that holds it; the library cumulates them when it exposes them), then the sum."""

    __slots__ = ("bounds", "counts")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts: list[float] = [0] * len(bounds) + [0.0]

    def inc(self, amount: float = 1) -> None:
        raise TypeError("a histogram is observed, not incremented")

    def observe(self, amount: float) -> None:
        counts = self.counts
        counts[bisect_left(self.bounds, amount)] += 1
        counts[-1] += amount


Recorder = Tally | Observations


class _Series:
    """One series: its running totals and, from its first flush on, prometheus-client's child
    they are written to, with what was written last (an unchanged value is not written again)."""

    __slots__ = ("child", "labels", "last", "metric", "recorder")

    def __init__(self, metric: Any, labels: tuple[str, ...], recorder: Recorder) -> None:
        self.metric = metric
        self.labels = labels
        self.recorder = recorder
        self.child: Any = None
        self.last: Any = None

    def flush(self) -> None:
        if self.child is None:
            self.child = self.metric.labels(*self.labels) if self.labels else self.metric
        recorder = self.recorder
        if isinstance(recorder, Tally):
            total = recorder.total
            if total != self.last:
                self.child._value.set(total)
                self.last = total
            return
        counts = list(recorder.counts)  # one copy: the buckets and the sum agree
        last = self.last or [None] * len(counts)
        if counts == last:
            return
        buckets = self.child._buckets
        for index, (count, before) in enumerate(zip(counts[:-1], last, strict=False)):
            if count != before:
                buckets[index].set(count)
        self.child._sum.set(counts[-1])
        self.last = counts


class FlushFirst:
    """A collector with no metrics of its own: registered ahead of the instruments (or of the
    collector that reads the workers' files), it brings this process's values up to date for
    the scrape that collects it."""

    def __init__(self, instruments: Instruments | None = None) -> None:
        self._instruments = instruments  # None: the process's own, if made

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        instruments = self._instruments or _made
        if instruments is not None:
            instruments.flush()
        return iter(())


class Instruments:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        registry.register(FlushFirst(self))  # ahead of the metrics it updates
        self.requests = Counter(
            "docproxy_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.bytes_sent = Counter(
            "docproxy_bytes_sent",
            "Body bytes sent to clients, by backend",
            ["backend"],
            registry=registry,
        )
        self.open_streams = Gauge(
            "docproxy_open_streams",
            "Bodies being sent now",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.download_seconds = Histogram(
            "docproxy_download_duration_seconds",
            "Time from the first byte read to the body's end, by outcome",
            ["outcome"],
            buckets=DOWNLOAD_BUCKETS,
            registry=registry,
        )
        self.store_seconds = Histogram(
            "docproxy_store_call_duration_seconds",
            "Store calls by backend and operation: stat, read (to the first chunk), presign",
            ["backend", "operation"],
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.catalog_seconds = Histogram(
            "docproxy_catalog_lookup_duration_seconds",
            "Catalog look-ups",
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.catalog_failures = Counter(
            "docproxy_catalog_lookup_failures",
            "Catalog look-ups that failed (answered 500)",
            registry=registry,
        )
        self.tokens = Counter(
            "docproxy_tokens",
            "Tokens issued and refused, by outcome and reason",
            ["outcome", "reason"],
            registry=registry,
        )
        self.presigned = Counter(
            "docproxy_presigned_urls",
            "Presigned URLs and links handed out, by backend",
            ["backend"],
            registry=registry,
        )
        # Every series counted so far; the flush reads a copy of this list, so a series first
        # counted meanwhile waits for the next flush.
        self._series: list[_Series] = []
        self._children: dict[tuple[object, ...], Recorder] = {}
        # What every download counts, found with one look-up of its own labels.
        self.streams = self.child(self.open_streams)
        self.catalog_timer = self.child(self.catalog_seconds)
        self._answered: dict[tuple[str, int], Tally] = {}
        self._sent: dict[str, Tally] = {}
        self._ended: dict[str, list[float]] = {}
        self._calls: dict[tuple[str, str], list[float]] = {}
        self._presigned: dict[str, Tally] = {}
        self._flushing = threading.Lock()  # a scrape on metrics.port flushes from its thread
        self._timer: asyncio.TimerHandle | None = None

    def child(self, metric: Any, *labels: str) -> Recorder:
        """The running total of ``metric`` with ``labels`` (none for an unlabelled metric)."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            if isinstance(metric, Histogram):
                found = Observations(tuple(metric._upper_bounds))
            else:
                found = Tally()
            self._children[key] = found
            self._series.append(_Series(metric, labels, found))
        return found

    def _tally(self, metric: Counter | Gauge, *labels: str) -> Tally:
        found = self.child(metric, *labels)
        assert isinstance(found, Tally)
        return found

    def _counts(self, metric: Histogram, *labels: str) -> list[float]:
        found = self.child(metric, *labels)
        assert isinstance(found, Observations)
        return found.counts

    # What every request counts: one dictionary look-up of its labels, then plain arithmetic
    # (a histogram's bounds are the module's own tuples, equal to the library's).

    def answered(self, route: str, status: int) -> None:
        self.tally_of_answers(route, status).total += 1

    def tally_of_answers(self, route: str, status: int) -> Tally:
        """The running total of ``route``'s answers with ``status``."""
        try:
            return self._answered[route, status]
        except KeyError:
            found = self._answered[route, status] = self._tally(self.requests, route, str(status))
            return found

    def download_ended(self, backend: str, outcome: str, sent: int, seconds: float) -> None:
        try:
            self._sent[backend].total += sent
        except KeyError:
            self._sent[backend] = self._tally(self.bytes_sent, backend)
            self._sent[backend].total += sent
        try:
            counts = self._ended[outcome]
        except KeyError:
            label = outcome.replace(" ", "_")
            counts = self._ended[outcome] = self._counts(self.download_seconds, label)
        counts[bisect_left(_DOWNLOAD_BOUNDS, seconds)] += 1
        counts[-1] += seconds

    def store_call(self, backend: str, operation: str, seconds: float) -> None:
        try:
            counts = self._calls[backend, operation]
        except KeyError:
            counts = self._calls[backend, operation] = self._counts(
                self.store_seconds, backend, operation
            )
        counts[bisect_left(_CALL_BOUNDS, seconds)] += 1
        counts[-1] += seconds

    def presigned_url(self, backend: str) -> None:
        try:
            self._presigned[backend].total += 1
        except KeyError:
            self._presigned[backend] = self._tally(self.presigned, backend)
            self._presigned[backend].total += 1

    def flush(self) -> None:
        """Write each running total that changed since the last flush into its prometheus-client
        value (in multiprocess mode, this worker's file). Safe from another thread: the totals
        are only read, each copied in one step, and only ever grow (or, a gauge, are current)."""
        with self._flushing:
            for series in list(self._series):
                series.flush()

    def start_flushing(self) -> None:
        """Flush every ``FLUSH_INTERVAL`` seconds on the running loop, until ``stop_flushing``."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(FLUSH_INTERVAL, tick)

        self.stop_flushing()
        self._timer = loop.call_later(FLUSH_INTERVAL, tick)

    def stop_flushing(self) -> None:
        """No more timed flushes; one now, so that nothing counted is left out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


_made: Instruments | None = None
_active: Instruments | None = None


def activate(on: bool) -> None:
    """``metrics.enabled``: make the instruments (once per process) and count, or count nothing."""
    global _made, _active
    if on and _made is None:
        _made = Instruments()
    _active = _made if on else None


def active() -> Instruments | None:
    """The instruments to count with, or None when metrics are off."""
    return _active


def made() -> Instruments | None:
    """The instruments, if this process made them, whether counting now or not."""
    return _made
