"""The instruments' running totals, as prometheus-client exposes them after a flush."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics.instruments import Instruments


def exposed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_reads_every_count_made_before_it():
    registry = CollectorRegistry()
    metered = Instruments(registry)
    for seconds in (0.0002, 0.003, 0.003, 0.2):
        metered.store_call("local", "stat", seconds)
    metered.answered("/download/{document_id:path}", 200)
    metered.answered("/download/{document_id:path}", 200)
    metered.answered("/download/{document_id:path}", 404)
    metered.streams.inc()
    metered.streams.inc()
    metered.streams.inc(-1)
    metered.download_ended("local", "aborted by client", 700, 0.02)
    metered.catalog_timer.observe(0.0004)
    metered.child(metered.tokens, "refused", "no_token").inc()
    metered.presigned_url("local")
    found = exposed(registry)
    route = (("route", "/download/{document_id:path}"),)
    assert found["docproxy_requests_total", (*route, ("status", "200"))] == 2
    assert found["docproxy_requests_total", (*route, ("status", "404"))] == 1
    assert found["docproxy_open_streams", ()] == 1
    assert found["docproxy_bytes_sent_total", (("backend", "local"),)] == 700
    ended = (("outcome", "aborted_by_client"),)
    assert found["docproxy_download_duration_seconds_count", ended] == 1
    assert found["docproxy_download_duration_seconds_bucket", (("le", "0.005"), *ended)] == 0
    assert found["docproxy_download_duration_seconds_bucket", (("le", "0.025"), *ended)] == 1
    stat = (("backend", "local"), ("operation", "stat"))
    bucket = "docproxy_store_call_duration_seconds_bucket"
    assert found[bucket, (("backend", "local"), ("le", "0.0005"), ("operation", "stat"))] == 1
    assert found[bucket, (("backend", "local"), ("le", "0.005"), ("operation", "stat"))] == 3
    assert found[bucket, (("backend", "local"), ("le", "+Inf"), ("operation", "stat"))] == 4
    assert found["docproxy_store_call_duration_seconds_sum", stat] == pytest.approx(0.2062)
    assert found["docproxy_catalog_lookup_duration_seconds_count", ()] == 1
    tokens = (("outcome", "refused"), ("reason", "no_token"))
    assert found["docproxy_tokens_total", tokens] == 1
    assert found["docproxy_presigned_urls_total", (("backend", "local"),)] == 1
    # Counted after that scrape: the next one reads the new totals.
    metered.answered("/download/{document_id:path}", 200)
    metered.streams.inc(-1)
    metered.store_call("local", "stat", 0.0001)
    found = exposed(registry)
    assert found["docproxy_requests_total", (*route, ("status", "200"))] == 3
    assert found["docproxy_open_streams", ()] == 0
    assert found[bucket, (("backend", "local"), ("le", "0.0005"), ("operation", "stat"))] == 2
    assert found[bucket, (("backend", "local"), ("le", "+Inf"), ("operation", "stat"))] == 5


def test_a_scrape_from_another_thread_sees_monotonic_counts():
    registry = CollectorRegistry()
    metered = Instruments(registry)
    seen: list[float] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            seen.append(
                exposed(registry).get(
                    ("docproxy_requests_total", (("route", "/x"), ("status", "200"))), 0
                )
            )

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for _ in range(20000):
            metered.answered("/x", 200)
    finally:
        done.set()
        scraper.join()
    assert seen == sorted(seen)
    assert (
        exposed(registry)["docproxy_requests_total", (("route", "/x"), ("status", "200"))] == 20000
    )


def test_the_timed_flush_writes_the_totals_until_stopped():
    registry = CollectorRegistry()
    metered = Instruments(registry)
    bytes_sent = metered.bytes_sent.labels("local")

    async def run() -> list[float]:
        metered.start_flushing()
        metered.download_ended("local", "complete", 10, 0.001)
        await asyncio.sleep(1.3)  # one timed flush, at FLUSH_INTERVAL
        flushed = bytes_sent._value.get()
        metered.download_ended("local", "complete", 5, 0.001)
        metered.stop_flushing()  # writes what is left
        return [flushed, bytes_sent._value.get()]

    assert asyncio.run(run()) == [10, 15]
    assert metered._timer is None
