"""docproxy's Prometheus instruments, made once per process, and whether they are on.

Labels name routes (the path template), backends, operations and reasons: never a document id,
a client or anything else a caller chooses, so the number of series stays bounded. Children of
labelled metrics are cached here: ``labels()`` costs a lock and a dict look-up per call.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Downloads last from milliseconds (10 KiB from page cache) to minutes (GiB to slow clients).
DOWNLOAD_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0)
# Store and catalog calls: sub-millisecond (local disk, cached rows) to the store timeout.
CALL_BUCKETS = (0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0)


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
        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


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
