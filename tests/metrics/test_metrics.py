"""GET /metrics read with Prometheus's own parser, on live servers (one worker and two)."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import CLIENT_ID, free_port


def add(service, tmp_path, name: str, data: bytes) -> str:
    from proxy.catalog.embedded import add_file
    from proxy.config.loading import load_settings

    source = tmp_path / f"upload-{name}"
    source.write_bytes(data)
    return add_file(load_settings(service.config_path), source, name=name, type_=None)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def exercise(service, tmp_path, downloads: int) -> str:
    document_id = add(service, tmp_path, "m.txt", b"x" * 1000)
    token = service.token()
    auth = {"authorization": f"Bearer {token}"}
    for _ in range(downloads):
        response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
        assert response.status_code == 200
    assert httpx.get(f"{service.base_url}/download/nope", headers=auth).status_code == 437
    assert (
        httpx.get(
            f"{service.base_url}/download/x", headers={"authorization": "Bearer no"}
        ).status_code
        == 403
    )
    bad = {"client_id": CLIENT_ID, "client_secret": "wrong"}
    assert httpx.post(f"{service.base_url}/generate-client-auth-token", json=bad).status_code == 403
    presigned = httpx.post(
        f"{service.base_url}/download", json={"document_id": document_id}, headers=auth
    )
    assert presigned.status_code == 200
    return document_id


def check(found, document_id: str, downloads: int) -> None:
    route = "/download/{document_id:path}"
    assert value(found, "docproxy_requests_total", route=route, status="200") == downloads
    assert value(found, "docproxy_requests_total", route=route, status="437") == 1
    assert value(found, "docproxy_requests_total", route=route, status="403") == 1
    assert value(found, "docproxy_bytes_sent_total", backend="local") == 1000 * downloads
    assert value(found, "docproxy_open_streams") == 0
    assert value(found, "docproxy_download_duration_seconds_count", outcome="complete") == downloads
    assert (
        value(
            found, "docproxy_store_call_duration_seconds_count", backend="local", operation="stat"
        )
        >= downloads
    )
    assert value(found, "docproxy_catalog_lookup_duration_seconds_count") >= downloads + 1
    assert value(found, "docproxy_tokens_total", outcome="issued", reason="client_credentials") == 1
    assert (
        value(found, "docproxy_tokens_total", outcome="refused", reason="client_credentials") == 1
    )
    assert value(found, "docproxy_tokens_total", outcome="refused", reason="invalid_token") == 1
    assert value(found, "docproxy_presigned_urls_total", backend="local") == 1
    # Routes, never ids, are labels.
    assert not any(document_id in str(labels) or "nope" in str(labels) for _, labels in found)


def test_metrics_on_the_api_port(make_service, tmp_path):
    service = make_service()
    document_id = exercise(service, tmp_path, downloads=3)
    check(samples(f"{service.base_url}/metrics"), document_id, downloads=3)


def checked_within(url: str, document_id: str, downloads: int, seconds: float) -> None:
    """``check`` passes on a scrape within ``seconds``: a worker other than the one that answers
    the scrape writes its counts for it once a second."""
    deadline = time.monotonic() + seconds
    while True:
        found = samples(url)
        try:
            check(found, document_id, downloads)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_metrics_summed_over_two_workers(make_service, tmp_path):
    service = make_service({"server": {"workers": 2}})
    document_id = exercise(service, tmp_path, downloads=8)
    checked_within(f"{service.base_url}/metrics", document_id, downloads=8, seconds=2)


def test_metrics_on_a_separate_port_only(make_service, tmp_path):
    port = free_port()
    service = make_service({"metrics": {"port": port, "host": "127.0.0.1"}})
    document_id = exercise(service, tmp_path, downloads=2)
    check(samples(f"http://127.0.0.1:{port}/metrics"), document_id, downloads=2)
    assert httpx.get(f"{service.base_url}/metrics").status_code == 404


def test_metrics_off(make_service):
    service = make_service({"metrics": {"enabled": False}})
    assert httpx.get(f"{service.base_url}/metrics").status_code == 404


def test_a_preflight_and_an_unknown_path_are_counted_without_their_path(make_service):
    service = make_service({"cors": {"allow_origins": ["https://app.example"]}})
    preflight = httpx.options(
        f"{service.base_url}/download/some-id",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert httpx.get(f"{service.base_url}/no/such/path").status_code == 404
    found = samples(f"{service.base_url}/metrics")
    assert value(found, "docproxy_requests_total", route="preflight", status="200") == 1
    assert value(found, "docproxy_requests_total", route="unmatched", status="404") == 1
    assert not any("some-id" in str(labels) or "such" in str(labels) for _, labels in found)
