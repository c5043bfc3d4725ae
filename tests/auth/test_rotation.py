"""auth.signing_keys and presign.signing_keys: the first key signs, every key verifies, so keys
rotate while tokens and links already handed out keep working until their key is removed."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import OctKey

from proxy.auth.errors import Unauthorized
from proxy.auth.links import LinkSigner
from proxy.config.settings import (
    ConfigError,
    PresignConfig,
    SigningKey,
    parse_settings,
    single_key,
)
from tests.auth.test_tokens import hand_signed
from tests.harness import assert_envelope, base_config, merge, run_cli

OLD_TOKEN_KEY = "old-token-key-0123456789abcdef"
NEW_TOKEN_KEY = "new-token-key-0123456789abcdef"
OLD_LINK_KEY = "old-link-key-0123456789abcdef"
NEW_LINK_KEY = "new-link-key-0123456789abcdef"
OLD = ({"id": "2025", "key": OLD_TOKEN_KEY}, {"id": "2025", "key": OLD_LINK_KEY})
NEW = ({"id": "2026", "key": NEW_TOKEN_KEY}, {"id": "2026", "key": NEW_LINK_KEY})


def keyed(*generations: tuple[dict, dict]) -> dict:
    """Config overrides listing each generation's token and link key, the signer first."""
    return {
        "auth": {"signing_key": None, "signing_keys": [g[0] for g in generations]},
        "presign": {"signing_key": None, "signing_keys": [g[1] for g in generations]},
    }


def link_for(service, token: str) -> str:
    response = httpx.post(
        f"{service.base_url}/download",
        headers={"Authorization": f"Bearer {token}"},
        json={"document_id": "rotated"},
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["download_url"]


def on(service, link: str) -> str:
    """The same link, asked of another replica."""
    parts = urlsplit(link)
    return f"{service.base_url}{parts.path}?{parts.query}"


def downloads(service, token: str) -> int:
    response = httpx.get(
        f"{service.base_url}/download/rotated", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


def kid(token: str) -> str:
    return jws.extract_compact(token.encode()).headers()["kid"]


def test_keys_rotate_without_refusing_live_tokens_and_links(make_service, tmp_path):
    """The three steps of a rotation, each a replica of its own sharing one catalog: add the new
    key second (it verifies), move it first (it signs), drop the old one."""
    source = tmp_path / "rotated.txt"
    source.write_bytes(b"rotated keys")
    before = make_service(keyed(OLD))
    run_cli(before.config_path, "documents", "add", str(source), "--id", "rotated")
    old_token = before.token()
    old_link = link_for(before, old_token)
    assert kid(old_token) == "2025"
    assert parse_qs(urlsplit(old_link).query)["kid"] == ["2025"]

    adding = make_service(keyed(OLD, NEW))
    assert kid(adding.token()) == "2025"  # a verifying key does not sign yet
    assert downloads(adding, old_token) == 200
    assert httpx.get(on(adding, old_link)).content == b"rotated keys"

    signing = make_service(keyed(NEW, OLD))
    new_token = signing.token()
    new_link = link_for(signing, new_token)
    assert kid(new_token) == "2026"
    assert parse_qs(urlsplit(new_link).query)["kid"] == ["2026"]
    # Old tokens and links still work here, and what this replica signs already works on the
    # replicas of the previous step: no request is refused while the new config rolls out.
    assert downloads(signing, old_token) == 200
    assert httpx.get(on(signing, old_link)).content == b"rotated keys"
    assert downloads(adding, new_token) == 200
    assert httpx.get(on(adding, new_link)).content == b"rotated keys"
    assert link_for(signing, old_token)  # an old token still makes new links

    removed = make_service(keyed(NEW))
    assert downloads(removed, new_token) == 200
    assert httpx.get(on(removed, new_link)).content == b"rotated keys"
    assert_envelope(
        httpx.get(
            f"{removed.base_url}/download/rotated",
            headers={"Authorization": f"Bearer {old_token}"},
        ),
        403,
        "UNAUTHORIZED",
    )
    assert_envelope(httpx.get(on(removed, old_link)), 403, "UNAUTHORIZED")


def test_a_token_naming_an_unknown_or_odd_kid_is_refused(make_service, tmp_path):
    service = make_service(keyed(NEW, OLD))
    source = tmp_path / "rotated.txt"
    source.write_bytes(b"rotated keys")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "rotated")
    claims = jwt.decode(service.token(), OctKey.import_key(NEW_TOKEN_KEY.encode())).claims
    new_key = OctKey.import_key(NEW_TOKEN_KEY.encode())
    for header_kid in ("2024", "", 2026, ["2026"], None):
        # Signed with the signing key, but naming no key that is it.
        header = {"alg": "HS256", "kid": header_kid}
        token = hand_signed(header, json.dumps(claims).encode(), NEW_TOKEN_KEY)
        assert downloads(service, token) == 403, header_kid
    # Without kid (a token made before keys had ids) the signing key checks it.
    assert downloads(service, jwt.encode({"alg": "HS256"}, claims, new_key)) == 200
    unnamed = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(OLD_TOKEN_KEY.encode()))
    assert downloads(service, unnamed) == 403
    # The kid names the old key, but the new key signed: refused.
    crossed = jwt.encode(
        {"alg": "HS256", "kid": "2025"}, claims, OctKey.import_key(NEW_TOKEN_KEY.encode())
    )
    assert downloads(service, crossed) == 403


# --- the link signer, on its own ---------------------------------------------------------------


def ring(*keys: tuple[str, str]) -> LinkSigner:
    return LinkSigner(PresignConfig(signing_keys=tuple(SigningKey(i, k) for i, k in keys)))


def test_the_signer_binds_purpose_parameters_and_key():
    signer = ring(("a", OLD_LINK_KEY), ("b", NEW_LINK_KEY))
    fields = signer.sign("archive", {"ids": "x,y", "name": "all.zip"})
    assert fields["kid"] == "a" and set(fields) == {"ids", "name", "expires", "kid", "signature"}
    assert signer.verify("archive", fields) == {"ids": "x,y", "name": "all.zip"}
    refused = [
        ("download", fields),  # another purpose
        ("archive", {**fields, "ids": "x,y,z"}),  # a changed parameter
        ("archive", {**fields, "more": "1"}),  # an added one
        ("archive", {k: v for k, v in fields.items() if k != "name"}),  # a dropped one
        ("archive", {**fields, "kid": "b"}),  # another configured key's id
        ("archive", {**fields, "kid": "c"}),  # an unknown id
    ]
    for purpose, candidate in refused:
        with pytest.raises(Unauthorized):
            signer.verify(purpose, candidate)
    # Only the first key signs; a signer holding only the second key refuses, one holding
    # the first (anywhere in its list) accepts.
    with pytest.raises(Unauthorized):
        ring(("b", NEW_LINK_KEY)).verify("archive", fields)
    assert ring(("b", NEW_LINK_KEY), ("a", OLD_LINK_KEY)).verify("archive", fields)


def test_the_signer_honours_its_own_ttl_or_the_one_given():
    signer = ring(("a", OLD_LINK_KEY))
    now = time.time()
    short = signer.sign("limited", {"n": "1"}, ttl=5, now=now)
    assert int(short["expires"]) == int(now) + 5
    assert signer.verify("limited", short, now=now + 4)
    with pytest.raises(Unauthorized):
        signer.verify("limited", short, now=now + 6)
    with pytest.raises(ValueError):
        signer.sign("limited", {"kid": "x"})


def test_a_document_link_given_a_parameter_twice_is_refused(make_service, tmp_path):
    service = make_service()
    source = tmp_path / "twice.txt"
    source.write_bytes(b"twice")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "rotated")
    link = link_for(service, service.token())
    assert httpx.get(link).content == b"twice"
    query = parse_qs(urlsplit(link).query)
    for extra in ({"kid": "default"}, {"id": "rotated"}, {"expires": query["expires"][0]}):
        assert_envelope(httpx.get(f"{link}&{urlencode(extra)}"), 403, "UNAUTHORIZED")


# --- configuration -----------------------------------------------------------------------------


def problems(overrides: dict, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_settings(merge(base_config(tmp_path), overrides))
    return raised.value.problems


def test_the_single_key_form_is_the_key_named_default(tmp_path):
    settings = parse_settings(base_config(tmp_path))
    assert settings.auth.signing_keys == single_key(base_config(tmp_path)["auth"]["signing_key"])
    assert settings.presign.signing_keys[0].id == "default"
    rotated = parse_settings(merge(base_config(tmp_path), keyed(NEW, OLD)))
    assert [k.id for k in rotated.auth.signing_keys] == ["2026", "2025"]
    assert rotated.presign.signing_keys[1] == SigningKey("2025", OLD_LINK_KEY)
    assert OLD_LINK_KEY not in repr(rotated)  # keys stay out of anything printed


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([], "auth.signing_keys: must list at least one key"),
        ("k" * 20, "auth.signing_keys: must be a list"),
        ([{"id": "a", "key": "short"}], "auth.signing_keys[0].key: must be at least 16 bytes"),
        ([{"key": OLD_TOKEN_KEY}], "auth.signing_keys[0].id: required"),
        ([{"id": "a b", "key": OLD_TOKEN_KEY}], "auth.signing_keys[0].id: must be 1 to 64 of"),
        ([{"id": "a", "key": OLD_TOKEN_KEY, "alg": "x"}], "auth.signing_keys[0].alg: unknown key"),
        (
            [{"id": "a", "key": OLD_TOKEN_KEY}, {"id": "a", "key": NEW_TOKEN_KEY}],
            "auth.signing_keys: id 'a' is declared twice",
        ),
    ],
)
def test_bad_key_lists_are_named(tmp_path, keys, expected):
    found = problems({"auth": {"signing_key": None, "signing_keys": keys}}, tmp_path)
    assert any(p.startswith(expected) for p in found), found


def test_both_forms_at_once_are_refused(tmp_path):
    found = problems({"presign": {"signing_keys": [NEW[1]]}}, tmp_path)
    assert found == ["presign.signing_key: give signing_key or signing_keys, not both"]
