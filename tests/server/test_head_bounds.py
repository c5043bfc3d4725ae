"""The request head is bounded before any endpoint runs: 431 past ``server.max_header_bytes``
or ``max_header_fields``, 414 past ``max_target_bytes``, and a bad ``Host`` is 400; every
refusal in the API's envelope, against a running server."""

from __future__ import annotations

import pytest

from proxy.config.settings import ConfigError, parse_settings
from tests.harness import base_config, merge
from tests.server.raw import connect, exchange, get, parse, read_until_close, request, send_all


@pytest.fixture(scope="module")
def service(make_module_service):
    return make_module_service()


def padded(total: int) -> bytes:
    """A GET /healthz head of exactly ``total`` bytes (a padding header fills it up)."""
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (total - len(start) - len(end)) + end


def assert_refused(raw: bytes, status: int, message: str) -> None:
    reply = parse(raw)
    assert reply.status == status, raw[:300]
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["connection"] == "close"
    assert reply.envelope() == {"statusCode": status, "data": {}, "message": message}


def test_a_head_of_exactly_the_limit_is_served_one_byte_more_is_431(service):
    assert request(service.port, padded(64 * 1024)).status == 200
    assert_refused(
        exchange(service.port, padded(64 * 1024 + 1)), 431, "Request header fields too large"
    )


def test_a_head_sent_in_small_pieces_is_counted_whole(service):
    data = padded(64 * 1024 + 1)
    with connect(service.port) as sock:
        for start in range(0, len(data), 1000):
            send_all(sock, data[start : start + 1000])
        assert_refused(read_until_close(sock), 431, "Request header fields too large")


def test_one_hundred_fields_pass_the_hundred_and_first_is_431(service):
    fields = [f"X-F{i}: v" for i in range(98)]  # with Host and Connection: 100
    assert request(service.port, get("/healthz", *fields)).status == 200
    assert_refused(
        exchange(service.port, get("/healthz", *fields, "X-Last: v")),
        431,
        "Request header fields too large",
    )


def test_a_target_of_exactly_the_limit_passes_one_byte_more_is_414(service):
    path = "/healthz?q="
    ok = path + "a" * (8 * 1024 - len(path))
    assert request(service.port, get(ok)).status == 200
    assert_refused(exchange(service.port, get(ok + "a")), 414, "Request target too long")


def test_an_endless_header_costs_a_bounded_amount_of_memory(service):
    """16 MiB of one header value: refused after the first 64 KiB, the rest read and dropped,
    so the server's resident memory does not grow with it."""
    before, _ = service.memory_kib()
    huge = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: " + b"a" * (16 * 1024 * 1024)
    assert_refused(exchange(service.port, huge), 431, "Request header fields too large")
    after, _ = service.memory_kib()
    assert after - before < 8 * 1024, (before, after)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (get("/healthz", host=None), "Missing Host header"),
        (get("/healthz", "Host: other.example"), "Duplicate Host header"),
        (get("/healthz", host="bad host"), "Invalid Host header"),
        (get("/healthz", host="example.com:port"), "Invalid Host header"),
        (get("/healthz", host="[::1"), "Invalid Host header"),
        (get("/healthz", host="a..b"), "Invalid Host header"),
        (get("/healthz", host=""), "Invalid Host header"),
        (get("/healthz", host="a/b"), "Invalid Host header"),
    ],
)
def test_a_bad_host_is_400(service, head, message):
    assert_refused(exchange(service.port, head), 400, message)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8080", "[::1]:80", "my_service"])
def test_a_good_host_is_served(service, host):
    assert request(service.port, get("/healthz", host=host)).status == 200


def test_http_1_0_needs_no_host(service):
    reply = request(service.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert reply.status == 200


def test_only_the_allowed_hosts_are_served(make_module_service):
    service = make_module_service(
        {"server": {"allowed_hosts": ["docs.example.com", "*.internal", "127.0.0.1"]}}
    )
    for host in ("docs.example.com", "DOCS.example.com:8443", "a.b.internal", "127.0.0.1"):
        assert request(service.port, get("/healthz", host=host)).status == 200, host
    for host in ("example.com", "internal", "docs.example.com.evil"):
        assert_refused(exchange(service.port, get("/healthz", host=host)), 400, "Host not allowed")


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({"max_header_bytes": "lots"}, "server.max_header_bytes: must be a byte size"),
        ({"max_header_bytes": 100}, "server.max_header_bytes: must be at least 1024 bytes"),
        ({"max_header_fields": 0}, "server.max_header_fields: must be at least 1"),
        ({"header_timeout": 0}, "server.header_timeout: must be more than 0"),
        ({"max_connections": "x"}, "server.max_connections: must be an integer"),
        ({"allowed_hosts": ["a b"]}, "server.allowed_hosts[0]: must be a host name or address"),
        ({"allowed_hosts": "a"}, "server.allowed_hosts: must be a list"),
    ],
)
def test_bad_limits_are_refused_naming_the_key(tmp_path, server, problem):
    with pytest.raises(ConfigError) as caught:
        parse_settings(merge(base_config(tmp_path), {"server": server}))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_the_limits_default_to_the_documented_values(tmp_path):
    limits = parse_settings(base_config(tmp_path)).server.limits
    assert (limits.max_header_bytes, limits.max_header_fields, limits.max_target_bytes) == (
        65536,
        100,
        8192,
    )
    assert (limits.header_timeout, limits.keepalive_timeout, limits.shutdown_timeout) == (
        10,
        5,
        30,
    )
