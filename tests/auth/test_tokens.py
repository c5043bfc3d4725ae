"""POST /generate-client-auth-token, and every way a Bearer token can be wrong."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid

import httpx
import pytest
import yaml
from joserfc import jwt
from joserfc.jwk import OctKey

from tests.harness import TOKEN_KEY, assert_envelope, run_cli

TOKEN_PATH = "/generate-client-auth-token"
# The Download Document API's example, word for word; the test config declares its client.
API_TOKEN_REQUEST = {
    "client_id": "your-client-id",
    "client_secret": "your-client-secret",
    "fingerprint": "device-fingerprint-123",
    "user": {
        "first_name": "John",
        "last_name": "Doe",
        "email": "john.doe@example.com",
        "group_name": "my-domain",
    },
}
HASHED_CLIENT_SECRET = "stored-only-as-a-hash"


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service(
        {
            "auth": {
                # Dozens of wrong credentials from one address: the limit has its own tests.
                "max_failed_logins": 0,
                "clients": [
                    {"client_id": "test-client", "client_secret": "test-secret"},
                    {"client_id": "your-client-id", "client_secret": "your-client-secret"},
                    {
                        "client_id": "hashed-client",
                        "client_secret_sha256": hashlib.sha256(
                            HASHED_CLIENT_SECRET.encode()
                        ).hexdigest(),
                    },
                ],
            }
        }
    )
    sample = tmp_path_factory.mktemp("doc") / "doc.txt"
    sample.write_bytes(b"token tests")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "doc-1")
    return service


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def good_claims(**changes) -> dict:
    now = int(time.time())
    claims = {
        "iss": "docproxy",
        "aud": "docproxy",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "client_id": "test-client",
        "email": "jane@example.com",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def encode(claims: dict, *, key: str = TOKEN_KEY, alg: str = "HS256") -> str:
    key_object = OctKey.import_key(key.encode())
    return jwt.encode({"alg": alg, "typ": "JWT"}, claims, key_object, algorithms=[alg])


def hand_signed(header: dict, payload: bytes, key: str = TOKEN_KEY) -> str:
    """A JWS built by hand, for payloads joserfc itself would refuse to produce."""
    import hmac

    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(claims: dict) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def get_doc(service, authorization: str | None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return httpx.get(f"{service.base_url}/download/doc-1", headers=headers)


# --- issuing -------------------------------------------------------------------------------


def test_api_example_returns_a_token_envelope(service):
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=API_TOKEN_REQUEST)
    assert response.status_code == 200
    body = response.json()
    assert body["statusCode"] == 200
    assert body["message"] == "OKAY"
    assert list(body["data"]) == ["access_token", "token_type", "expires_in"]
    assert body["data"]["access_token"].startswith("eyJ")
    assert body["data"]["token_type"] == "Bearer"
    assert body["data"]["expires_in"] == 3600  # the default TTL, in seconds
    # RFC 6749, section 5.1: no cache keeps a response that carries a token.
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_a_refused_client_gets_no_bearer_challenge(service):
    """The token endpoint takes client credentials, not a Bearer token: no challenge."""
    request = {"client_id": "your-client-id", "client_secret": "wrong"}
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=request)
    assert_envelope(response, 403, "UNAUTHORIZED")
    assert "www-authenticate" not in response.headers


def test_token_carries_the_promised_claims_and_header(service):
    before = int(time.time())
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=API_TOKEN_REQUEST)
    token = response.json()["data"]["access_token"]
    decoded = jwt.decode(token, OctKey.import_key(TOKEN_KEY.encode()), algorithms=["HS256"])
    assert decoded.header == {"alg": "HS256", "typ": "JWT", "kid": "default"}
    claims = decoded.claims
    assert claims["client_id"] == "your-client-id"
    assert claims["email"] == "john.doe@example.com"
    assert claims["group_name"] == "my-domain"
    assert claims["fingerprint"] == "device-fingerprint-123"
    assert claims["iss"] == "docproxy"
    assert claims["aud"] == "docproxy"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600  # the default TTL: one hour
    assert len(claims["jti"]) >= 16
    # The secret never travels inside the token.
    assert "your-client-secret" not in json.dumps(claims)


def test_every_token_gets_its_own_jti(service):
    tokens = [
        httpx.post(f"{service.base_url}{TOKEN_PATH}", json=API_TOKEN_REQUEST).json()["data"][
            "access_token"
        ]
        for _ in range(3)
    ]
    key = OctKey.import_key(TOKEN_KEY.encode())
    ids = {jwt.decode(t, key, algorithms=["HS256"]).claims["jti"] for t in tokens}
    assert len(ids) == 3


def test_issued_token_downloads(service):
    response = get_doc(service, f"Bearer {service.token()}")
    assert response.status_code == 200
    assert response.content == b"token tests"


def test_client_secret_sha256_config_works(service):
    request = {"client_id": "hashed-client", "client_secret": HASHED_CLIENT_SECRET}
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=request)
    assert response.status_code == 200, response.text
    token = response.json()["data"]["access_token"]
    assert get_doc(service, f"Bearer {token}").status_code == 200
    # The digest itself is not a password.
    digest = hashlib.sha256(HASHED_CLIENT_SECRET.encode()).hexdigest()
    wrong = {"client_id": "hashed-client", "client_secret": digest}
    assert_envelope(httpx.post(f"{service.base_url}{TOKEN_PATH}", json=wrong), 403, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "request_body",
    [
        {"client_id": "your-client-id", "client_secret": "wrong"},
        {"client_id": "your-client-id", "client_secret": "your-client-secret "},
        {"client_id": "no-such-client", "client_secret": "your-client-secret"},
        {"client_id": "your-client-id", "client_secret": "test-secret"},  # another client's
    ],
    ids=["wrong-secret", "secret-plus-space", "unknown-client", "other-clients-secret"],
)
def test_bad_credentials_are_refused(service, request_body):
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=request_body)
    assert_envelope(response, 403, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"client_secret": "x"}, "client_id is required"),
        ({"client_id": "", "client_secret": "x"}, "client_id is required"),
        ({"client_id": None, "client_secret": "x"}, "client_id is required"),
        ({"client_id": "your-client-id"}, "client_secret is required"),
        ({"client_id": 7, "client_secret": "x"}, "client_id must be a string"),
        ({"client_id": "a", "client_secret": ["x"]}, "client_secret must be a string"),
        (
            {"client_id": "a", "client_secret": "x", "fingerprint": 5},
            "fingerprint must be a string",
        ),
        ({"client_id": "a", "client_secret": "x", "user": "bob"}, "user must be a JSON object"),
        ({"client_id": "a", "client_secret": "x", "user": []}, "user must be a JSON object"),
        (
            {"client_id": "a", "client_secret": "x", "user": {"email": 1}},
            "user.email must be a string",
        ),
        (
            {"client_id": "a", "client_secret": "x", "user": {"group_name": {}}},
            "user.group_name must be a string",
        ),
        (
            {"client_id": "a", "client_secret": "x", "user": {"first_name": True}},
            "user.first_name must be a string",
        ),
        ({}, "client_id is required"),
    ],
)
def test_missing_or_mistyped_fields_get_435(service, request_body, message):
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=request_body)
    assert_envelope(response, 435, message)


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b'{"client_id": ', "application/json", "Malformed JSON body"),
        (b'["client_id"]', "application/json", "Request body must be a JSON object"),
        (b'"text"', "application/json", "Request body must be a JSON object"),
        (
            json.dumps(API_TOKEN_REQUEST).encode(),
            "text/plain",
            "Content-Type must be application/json",
        ),
        (b"", "application/json", "client_id is required"),
    ],
    ids=["malformed", "array", "string", "wrong-content-type", "empty"],
)
def test_token_endpoint_bad_bodies(service, content, content_type, message):
    response = httpx.post(
        f"{service.base_url}{TOKEN_PATH}", content=content, headers={"Content-Type": content_type}
    )
    assert_envelope(response, 435, message)


# --- verifying -----------------------------------------------------------------------------


def test_a_hand_made_token_with_the_right_key_is_accepted(service):
    """The control for the attacks below: each changes exactly one thing of this token."""
    assert get_doc(service, f"Bearer {encode(good_claims())}").status_code == 200


ATTACKS = {
    "no-header": None,
    "empty-header": "",
    "basic-scheme": "Basic dGVzdC1jbGllbnQ6dGVzdC1zZWNyZXQ=",
    "token-without-scheme": "TOKEN",  # replaced by a real token below
    "bearer-without-token": "Bearer",
    "two-tokens": "Bearer TOKEN TOKEN",
    "malformed": "Bearer not-a-jwt",
    "three-garbage-parts": "Bearer a.b.c",
    "json-serialization": 'Bearer {"payload":"e30","signatures":[]}',
    "forged-signature": f"Bearer {encode(good_claims(), key='another-key-0123456789abcdef')}",
    "expired": f"Bearer {encode(good_claims(iat=1_600_000_000, exp=1_600_000_600))}",
    "expired-a-second-ago": f"Bearer {encode(good_claims(exp=int(time.time()) - 1))}",
    "not-yet-valid": f"Bearer {encode(good_claims(nbf=int(time.time()) + 3600))}",
    "alg-none": f"Bearer {unsigned(good_claims())}",
    "alg-none-with-signature": f"Bearer {unsigned(good_claims())}c2lnbmF0dXJl",
    "wrong-issuer": f"Bearer {encode(good_claims(iss='someone-else'))}",
    "wrong-audience": f"Bearer {encode(good_claims(aud='another-service'))}",
    "missing-exp": f"Bearer {encode(good_claims(exp=None))}",
    "missing-iat": f"Bearer {encode(good_claims(iat=None))}",
    "missing-iss": f"Bearer {encode(good_claims(iss=None))}",
    "missing-aud": f"Bearer {encode(good_claims(aud=None))}",
    "missing-jti": f"Bearer {encode(good_claims(jti=None))}",
    "missing-client-id": f"Bearer {encode(good_claims(client_id=None))}",
    "non-string-group": f"Bearer {encode(good_claims(group_name=['a', 'b']))}",
    "hs512-when-hs256": f"Bearer {encode(good_claims(), alg='HS512')}",
    "payload-is-a-list": f"Bearer {hand_signed({'alg': 'HS256'}, b'[1, 2]')}",
    "payload-is-null": f"Bearer {hand_signed({'alg': 'HS256'}, b'null')}",
    "payload-not-json": f"Bearer {hand_signed({'alg': 'HS256'}, b'not json')}",
    "header-without-alg": "Bearer "
    + hand_signed({"typ": "JWT"}, json.dumps(good_claims()).encode()),
}


# The attacks in which no Bearer token is presented: their 403 challenges with a bare
# "Bearer"; every other one says the token presented is invalid (RFC 6750, section 3.1).
NO_TOKEN_PRESENTED = {
    "no-header",
    "empty-header",
    "basic-scheme",
    "token-without-scheme",
    "bearer-without-token",
}


def challenge(attack: str) -> str:
    return "Bearer" if attack in NO_TOKEN_PRESENTED else 'Bearer error="invalid_token"'


def attack_header(name: str) -> str | None:
    value = ATTACKS[name]
    if value is not None and "TOKEN" in value:
        value = value.replace("TOKEN", encode(good_claims()))
    return value


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_token_attacks_on_get_download(service, attack):
    response = get_doc(service, attack_header(attack))
    assert_envelope(response, 403, "UNAUTHORIZED")
    assert response.headers.get_list("www-authenticate") == [challenge(attack)]


@pytest.mark.parametrize("attack", ["no-header", "forged-signature", "expired", "alg-none"])
def test_token_attacks_on_post_download(service, attack):
    header = attack_header(attack)
    headers = {} if header is None else {"Authorization": header}
    response = httpx.post(
        f"{service.base_url}/download", json={"document_id": "doc-1"}, headers=headers
    )
    assert_envelope(response, 403, "UNAUTHORIZED")
    assert response.headers.get_list("www-authenticate") == [challenge(attack)]


def test_tampered_payload_of_a_real_token_is_refused(service):
    token = service.token()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["group_name"] = "admins"
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert_envelope(get_doc(service, f"Bearer {forged}"), 403, "UNAUTHORIZED")


def test_scheme_is_case_insensitive(service):
    assert get_doc(service, f"bearer {service.token()}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/download",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("POST", "/download", {"content": b"[]", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/download", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/download", {"json": {}}),
        ("POST", "/download", {"json": {"document_id": "no-such-document"}}),
        ("GET", "/download/", {}),
        ("GET", "/download", {}),
        ("GET", "/download/no-such-document", {}),
    ],
    ids=["bad-json", "array", "wrong-type", "no-id", "unknown-id", "slash", "bare", "unknown"],
)
def test_token_is_checked_before_anything_else(service, method, path, kwargs):
    headers = {**kwargs.pop("headers", {}), "Authorization": "Bearer forged.token.value"}
    response = httpx.request(method, f"{service.base_url}{path}", headers=headers, **kwargs)
    assert_envelope(response, 403, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_ttl_and_algorithm_follow_the_config(make_service, tmp_path):
    service = make_service({"auth": {"token_ttl": 120, "algorithm": "HS512"}})
    issued = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=API_TOKEN_REQUEST | {
        "client_id": "test-client", "client_secret": "test-secret"})  # fmt: skip
    assert issued.json()["data"]["expires_in"] == 120
    token = service.token()
    key = OctKey.import_key(TOKEN_KEY.encode())
    decoded = jwt.decode(token, key, algorithms=["HS512"])
    assert decoded.header["alg"] == "HS512"
    assert decoded.claims["exp"] - decoded.claims["iat"] == 120
    sample = tmp_path / "x.txt"
    sample.write_bytes(b"x")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "doc-1")
    assert get_doc(service, f"Bearer {token}").status_code == 200
    # An HS256 token with the same key is not accepted by an HS512 service.
    assert_envelope(get_doc(service, f"Bearer {encode(good_claims())}"), 403, "UNAUTHORIZED")


# --- clients leaving the config, text that is not Unicode ----------------------------------


STRING_FIELDS = [
    ("client_id",),
    ("client_secret",),
    ("fingerprint",),
    ("user", "first_name"),
    ("user", "last_name"),
    ("user", "email"),
    ("user", "group_name"),
]


@pytest.mark.parametrize("field", STRING_FIELDS, ids=[".".join(f) for f in STRING_FIELDS])
@pytest.mark.parametrize("text", ["\\ud800", "ok\\udfff", "\\udc00\\ud800"])
def test_a_lone_surrogate_in_a_token_field_gets_435_naming_it(service, field, text):
    body = json.loads(json.dumps(API_TOKEN_REQUEST))
    target = body
    for name in field[:-1]:
        target = target[name]
    target[field[-1]] = "PLACEHOLDER"
    # json.dumps would escape a real surrogate itself; the escape is written into the text.
    content = json.dumps(body).replace("PLACEHOLDER", text).encode()
    response = httpx.post(
        f"{service.base_url}{TOKEN_PATH}",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert_envelope(response, 435, f"{'.'.join(field)} must be valid Unicode")


def test_a_body_that_is_not_utf8_gets_435(service):
    content = json.dumps(API_TOKEN_REQUEST).replace("John", "J\udcffohn", 1)
    response = httpx.post(
        f"{service.base_url}{TOKEN_PATH}",
        content=content.encode("utf-8", "surrogateescape"),  # a raw 0xff byte
        headers={"Content-Type": "application/json"},
    )
    assert_envelope(response, 435, "Malformed JSON body")


def test_a_client_removed_from_the_config_loses_its_tokens(make_service, tmp_path):
    leaving = {"client_id": "leaving-client", "client_secret": "leaving-secret"}
    clients = [{"client_id": "test-client", "client_secret": "test-secret"}, leaving]
    service = make_service({"auth": {"clients": clients}})
    sample = tmp_path / "x.txt"
    sample.write_bytes(b"x")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "doc-1")
    response = httpx.post(f"{service.base_url}{TOKEN_PATH}", json=leaving)
    leaving_token = response.json()["data"]["access_token"]
    staying_token = service.token()
    assert get_doc(service, f"Bearer {leaving_token}").status_code == 200

    service.stop()
    config = yaml.safe_load(service.config_path.read_text())
    config["auth"]["clients"] = clients[:1]
    service.config_path.write_text(yaml.safe_dump(config))
    service.start()

    assert_envelope(get_doc(service, f"Bearer {leaving_token}"), 403, "UNAUTHORIZED")
    assert get_doc(service, f"Bearer {staying_token}").status_code == 200
    assert_envelope(
        httpx.post(f"{service.base_url}{TOKEN_PATH}", json=leaving), 403, "UNAUTHORIZED"
    )


def test_a_signed_token_for_a_client_never_configured_is_refused(service):
    token = encode(good_claims(client_id="never-configured"))
    assert_envelope(get_doc(service, f"Bearer {token}"), 403, "UNAUTHORIZED")
