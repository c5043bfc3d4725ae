"""Verified tokens are remembered, and still expire, become valid and are refused as before."""

from __future__ import annotations

import time

import pytest

from proxy.auth.errors import Unauthorized
from proxy.auth.tokens import TokenAuthority, TokenRequest
from proxy.config.settings import AuthConfig, ClientConfig, single_key


def authority(ttl: int) -> TokenAuthority:
    import hashlib

    client = ClientConfig("c", hashlib.sha256(b"s").digest())
    return TokenAuthority(
        AuthConfig(signing_keys=single_key("k" * 32), token_ttl=ttl, clients=(client,))
    )


def test_a_cached_token_still_expires():
    tokens = authority(ttl=1)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, "a@b.c", "g"))
    assert tokens.verify(token).group_name == "g"
    assert tokens.verify(token).email == "a@b.c"  # from the cache
    time.sleep(2.1)
    with pytest.raises(Unauthorized):
        tokens.verify(token)


def test_a_token_not_yet_valid_becomes_valid():
    tokens = authority(ttl=60)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None), now=time.time() + 2)
    with pytest.raises(Unauthorized):
        tokens.verify(token)  # nbf/iat in the future; the signature is cached all the same
    time.sleep(2.2)
    assert tokens.verify(token).client_id == "c"


def test_a_tampered_token_is_refused_even_after_the_real_one_was_cached():
    tokens = authority(ttl=60)
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None))
    tokens.verify(token)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        tokens.verify(forged)


def test_a_cached_token_keeps_the_leeway_on_both_sides(monkeypatch):
    import hashlib

    client = ClientConfig("c", hashlib.sha256(b"s").digest())
    tokens = TokenAuthority(
        AuthConfig(signing_keys=single_key("k" * 32), token_ttl=60, leeway=5, clients=(client,))
    )
    issued = 1_900_000_000
    token = tokens.issue(TokenRequest("c", "s", None, None, None, None, None), now=issued)
    clock = {"now": issued - 5.0}  # nbf/iat 5 s ahead: inside the leeway
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    assert tokens.verify(token).client_id == "c"  # the full check
    for now, accepted in [
        (issued - 5.0, True),
        (issued - 6.0, False),  # before nbf - leeway
        (issued + 60 + 5.0, True),  # exp + leeway
        (issued + 60 + 6.0, False),  # past exp + leeway
        (issued + 30.0, True),  # and back inside: the refusals did not spoil the cache
    ]:
        clock["now"] = now
        if accepted:
            assert tokens.verify(token).client_id == "c"
        else:
            with pytest.raises(Unauthorized):
                tokens.verify(token)
