"""Guessing client secrets: after auth.max_failed_logins failures per client id or per remote
address, the token endpoint answers 429 with Retry-After; other clients go on."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import CLIENT_ID, CLIENT_SECRET, assert_envelope

TOKEN_PATH = "/generate-client-auth-token"
OTHER = {"client_id": "other-client", "client_secret": "other-secret"}
CLIENTS = [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, OTHER]


def post_from(service, address: str, body: dict) -> httpx.Response:
    """A token request sent from ``address`` (any 127.x.y.z is this machine's loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport) as client:
        return client.post(f"{service.base_url}{TOKEN_PATH}", json=body)


def right(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict:
    return {"client_id": client_id, "client_secret": secret}


def assert_blocked(response: httpx.Response, window: int) -> None:
    assert_envelope(response, 429, "Too many failed login attempts")
    assert 1 <= int(response.headers["retry-after"]) <= window


@pytest.fixture
def service(make_service):
    return make_service(
        {"auth": {"clients": CLIENTS, "max_failed_logins": 3, "failed_login_window": 60}}
    )


def test_a_guessed_client_id_is_blocked_for_every_address(service):
    for _ in range(3):
        wrong = post_from(service, "127.0.0.2", right(secret="guess"))
        assert_envelope(wrong, 403, "UNAUTHORIZED")
    # Blocked even with the right secret, so the answer tells a guesser nothing.
    assert_blocked(post_from(service, "127.0.0.2", right()), 60)
    assert_blocked(post_from(service, "127.0.0.3", right()), 60)
    # Another client id from an address that did not guess is served.
    assert post_from(service, "127.0.0.3", OTHER).status_code == 200


def test_an_address_spraying_client_ids_is_blocked_for_every_client_id(service):
    for index in range(3):
        response = post_from(service, "127.0.0.4", right(f"guess-{index}", "guess"))
        assert_envelope(response, 403, "UNAUTHORIZED")
    assert_blocked(post_from(service, "127.0.0.4", OTHER), 60)
    assert post_from(service, "127.0.0.5", OTHER).status_code == 200
    assert post_from(service, "127.0.0.5", right()).status_code == 200


def test_bad_bodies_are_not_failed_logins(service):
    for _ in range(5):
        response = post_from(service, "127.0.0.6", {"client_id": CLIENT_ID})
        assert_envelope(response, 435, "client_secret is required")
    assert post_from(service, "127.0.0.6", right()).status_code == 200


def test_zero_turns_the_limit_off(make_service):
    service = make_service({"auth": {"max_failed_logins": 0}})
    for _ in range(8):
        assert_envelope(post_from(service, "127.0.0.7", right(secret="guess")), 403, "UNAUTHORIZED")
    assert post_from(service, "127.0.0.7", right()).status_code == 200
