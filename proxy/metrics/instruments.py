"""docproxy's Prometheus instruments, made once per process, and whether they are on.

Labels name routes (the path template), backends, operations and reasons: never a document id,
a client or anything else a caller chooses, so the number of series stays bounded.

Counting sits on every download's path, so ``child`` hands out recorders that update
prometheus-client's value objects directly: ``labels()`` costs a lock and a dict look-up per
call, and each ``inc``/``observe`` re-checks what a child made here already satisfies (a
Histogram's linear bucket scan becomes a bisection). The values are the library's own, in
its single- and multiprocess modes alike, so its exposition reads them unchanged.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

# Downloads last from milliseconds (10 KiB from page cache) to minutes (GiB to slow clients).
DOWNLOAD_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0)
# Store and catalog calls: sub-millisecond (local disk, cached rows) to the store timeout.
CALL_BUCKETS = (0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0)


class Recorder(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def observe(self, amount: float) -> None: ...


class _Value:
    """A Counter's or Gauge's child: ``inc`` (a gauge goes down with a negative amount)."""

    __slots__ = ("_value",)

    def __init__(self, child: Counter | Gauge) -> None:
        self._value = child._value

    def inc(self, amount: float = 1) -> None:
        self._value.inc(amount)

    def observe(self, amount: float) -> None:
        raise TypeError("a counter or gauge is not observed")


class _Buckets:
    """A Histogram's child: ``observe`` adds to the sum and to the first bucket that holds it
    (the library cumulates the buckets when it exposes them)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._sum = child._sum
        self._buckets = child._buckets
        self._bounds = child._upper_bounds

    def inc(self, amount: float = 1) -> None:
        raise TypeError("a histogram is observed, not incremented")

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)


def recorder(child: Any) -> Recorder:
    """The fast recorder of a metric's child (an unlabelled metric is its own child)."""
    if isinstance(child, Histogram):
        return _Buckets(child)
    return _Value(child)


class Instruments:
    def __init__(self) -> None:
        self.requests = Counter(
            "docproxy_requests", "HTTP requests answered, by route and status", ["route", "status"]
        )
        self.bytes_sent = Counter(
            "docproxy_bytes_sent", "Body bytes sent to clients, by backend", ["backend"]
        )
        self.open_streams = Gauge(
            "docproxy_open_streams", "Bodies being sent now", multiprocess_mode="livesum"
        )
        self.download_seconds = Histogram(
            "docproxy_download_duration_seconds",
            "Time from the first byte read to the body's end, by outcome",
            ["outcome"],
            buckets=DOWNLOAD_BUCKETS,
        )
        self.store_seconds = Histogram(
            "docproxy_store_call_duration_seconds",
            "Store calls by backend and operation: stat, read (to the first chunk), presign",
            ["backend", "operation"],
            buckets=CALL_BUCKETS,
        )
        self.catalog_seconds = Histogram(
            "docproxy_catalog_lookup_duration_seconds", "Catalog look-ups", buckets=CALL_BUCKETS
        )
        self.catalog_failures = Counter(
            "docproxy_catalog_lookup_failures", "Catalog look-ups that failed (answered 500)"
        )
        self.tokens = Counter(
            "docproxy_tokens",
            "Tokens issued and refused, by outcome and reason",
            ["outcome", "reason"],
        )
        self.presigned = Counter(
            "docproxy_presigned_urls",
            "Presigned URLs and links handed out, by backend",
            ["backend"],
        )
        self._children: dict[tuple[object, ...], Recorder] = {}
        # What every download counts, found with one look-up of its own labels.
        self.streams = recorder(self.open_streams)
        self.catalog_timer = recorder(self.catalog_seconds)
        self._answered: dict[tuple[str, int], Recorder] = {}
        self._sent: dict[str, Recorder] = {}
        self._ended: dict[str, Recorder] = {}
        self._calls: dict[tuple[str, str], Recorder] = {}

    def child(self, metric: Any, *labels: str) -> Recorder:
        """The recorder for ``metric`` with ``labels`` (none for an unlabelled metric)."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = recorder(metric.labels(*labels) if labels else metric)
        return found

    def answered(self, route: str, status: int) -> None:
        try:
            found = self._answered[route, status]
        except KeyError:
            found = self._answered[route, status] = self.child(self.requests, route, str(status))
        found.inc()

    def download_ended(self, backend: str, outcome: str, sent: int, seconds: float) -> None:
        try:
            bytes_sent, duration = self._sent[backend], self._ended[outcome]
        except KeyError:
            bytes_sent = self._sent[backend] = self.child(self.bytes_sent, backend)
            label = outcome.replace(" ", "_")
            duration = self._ended[outcome] = self.child(self.download_seconds, label)
        bytes_sent.inc(sent)
        duration.observe(seconds)

    def store_call(self, backend: str, operation: str, seconds: float) -> None:
        try:
            found = self._calls[backend, operation]
        except KeyError:
            found = self._calls[backend, operation] = self.child(
                self.store_seconds, backend, operation
            )
        found.observe(seconds)


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
