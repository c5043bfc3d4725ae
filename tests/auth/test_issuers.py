"""auth.issuers: tokens of the application's own identity provider, checked with the keys of a
JWKS endpoint this module serves itself, are accepted on the download endpoints."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.harness import assert_envelope, run_cli
from tests.state.shared import eventually

pytestmark = pytest.mark.timeout(120)

AUDIENCE = "my-app"
TIMEOUT = 1  # auth.jwks_timeout
MIN_REFRESH = 3  # auth.jwks_min_refresh
DOCUMENT_BYTES = b"for acme only"


def private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Signer:
    """A provider's key pair, made by `cryptography`, with its kid and algorithm."""

    def __init__(self, algorithm: str, kid: str) -> None:
        made = {
            "RS256": lambda: (RSAKey, rsa.generate_private_key(65537, 2048)),
            "ES256": lambda: (ECKey, ec.generate_private_key(ec.SECP256R1())),
            "EdDSA": lambda: (OKPKey, ed25519.Ed25519PrivateKey.generate()),
        }[algorithm]
        kind, private = made()
        self.algorithm, self.kid, self.private = algorithm, kid, private
        self.key = kind.import_key(private_pem(private), {"kid": kid})

    def public_jwk(self) -> dict:
        return {**self.key.as_dict(private=False), "kid": self.kid}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, issuer: str, **claims) -> str:
        now = int(time.time())
        body = {"iss": issuer, "aud": AUDIENCE, "iat": now, "exp": now + 300, "uid": "u-1"}
        body.update(claims)
        header = {"alg": self.algorithm, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, body, self.key, algorithms=[self.algorithm])


class JwksServer:
    """Serves ``/jwks/NAME`` from ``keys[NAME]``, counts requests per name, and never answers
    on ``/hang``."""

    def __init__(self) -> None:
        self.keys: dict[str, list[dict]] = {}
        self.requests: dict[str, int] = {}
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                owner.requests[name] = owner.requests.get(name, 0) + 1
                if self.path == "/hang":
                    owner.release.wait(30)
                    return
                body = json.dumps({"keys": owner.keys.get(name, [])}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks():
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def signers():
    return {a: Signer(a, f"{a.lower()}-1") for a in ("RS256", "ES256", "EdDSA")}


def issuer(jwks: JwksServer, name: str, **more) -> dict:
    return {"issuer": f"https://{name}.example", "jwks_url": f"{jwks.url}/jwks/{name}",
            "audience": AUDIENCE, **more}  # fmt: skip


@pytest.fixture(scope="module")
def service(make_module_service, jwks, signers, tmp_path_factory):
    public = [s.public_jwk() for s in signers.values()]
    for name in ("idp", "rs-only", "rotating", "limited"):
        jwks.keys[name] = list(public)
    folder = tmp_path_factory.mktemp("idp")
    file_signer = Signer("ES256", "from-file")
    (folder / "jwks.json").write_text(json.dumps({"keys": [file_signer.public_jwk()]}))
    everything = ["RS256", "ES256", "EdDSA"]
    mapped = {"group": "org", "email": "mail", "subject": "uid"}
    service = make_module_service(
        {
            "auth": {
                "jwks_timeout": TIMEOUT,
                "jwks_min_refresh": MIN_REFRESH,
                "issuers": [
                    issuer(jwks, "idp", algorithms=everything, claims=mapped),
                    issuer(jwks, "rs-only"),
                    issuer(jwks, "rotating", algorithms=everything),
                    issuer(jwks, "limited", algorithms=everything),
                    {**issuer(jwks, "slow"), "jwks_url": f"{jwks.url}/hang"},
                    {
                        "issuer": "https://file.example",
                        "jwks_file": str(folder / "jwks.json"),
                        "audience": AUDIENCE,
                        "algorithms": ["ES256"],
                    },
                ],
            },
            "catalog": {"tenant_rule": "on"},
        }
    )
    source = folder / "acme.txt"
    source.write_bytes(DOCUMENT_BYTES)
    run_cli(service.config_path, "documents", "add", str(source), "--id", "acme-doc",
            "--group", "acme")  # fmt: skip
    service.file_signer = file_signer
    return service


def get(service, token: str, document_id: str = "acme-doc") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{service.base_url}/download/{document_id}", headers=headers, timeout=10)


def refused(response: httpx.Response) -> None:
    assert_envelope(response, 403, "UNAUTHORIZED")


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_tokens_of_each_algorithm_download(service, signers, algorithm):
    token = signers[algorithm].token("https://idp.example", org="acme")
    response = get(service, token)
    assert response.status_code == 200, response.text
    assert response.content == DOCUMENT_BYTES


def test_the_other_download_endpoints_take_them_too(service, signers):
    token = signers["RS256"].token("https://idp.example", org="acme")
    auth = {"Authorization": f"Bearer {token}"}
    body = {"document_id": "acme-doc"}
    link = httpx.post(f"{service.base_url}/download", headers=auth, json=body)
    assert link.status_code == 200, link.text
    assert httpx.get(link.json()["data"]["download_url"]).content == DOCUMENT_BYTES
    body = {"document_ids": ["acme-doc"], "filename": "a.zip"}
    archive = httpx.post(f"{service.base_url}/download/zip", headers=auth, json=body)
    assert archive.status_code == 200, archive.text


def test_the_mapped_group_claim_meets_the_tenant_rule(service, signers):
    other = signers["ES256"].token("https://idp.example", org="other", group_name="acme")
    assert_envelope(get(service, other), 437, "Document not found")
    # Without a mapping the provider's group_name claim is the group.
    plain = signers["ES256"].token("https://rotating.example", group_name="acme")
    assert get(service, plain).content == DOCUMENT_BYTES


def test_a_jwks_file_is_read_at_start(service):
    token = service.file_signer.token("https://file.example", group_name="acme")
    assert get(service, token).content == DOCUMENT_BYTES


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-app"},
        {"iss": "https://unknown.example"},
        {"exp": int(time.time()) - 60},
        {"exp": None},
    ],
    ids=["audience", "issuer", "expired", "no-expiry"],
)
def test_wrong_claims_are_refused(service, signers, claims):
    claims = {"iss": "https://idp.example", "org": "acme", **claims}
    if claims.get("exp", 0) is None:
        now = int(time.time())
        signer = signers["RS256"]
        body = {"iss": claims["iss"], "aud": AUDIENCE, "iat": now, "org": "acme"}
        header = {"alg": "RS256", "kid": signer.kid}
        token = jwt.encode(header, body, signer.key, algorithms=["RS256"])
    else:
        issuer_name = claims.pop("iss")
        token = signers["RS256"].token(issuer_name, **claims)
    refused(get(service, token))


def test_an_algorithm_the_issuer_does_not_list_is_refused(service, signers):
    rs256 = signers["RS256"].token("https://rs-only.example", group_name="acme")
    assert get(service, rs256).content == DOCUMENT_BYTES
    refused(get(service, signers["ES256"].token("https://rs-only.example", group_name="acme")))


def test_hs256_signed_with_the_rsa_public_key_is_refused(service, signers):
    rsa_signer = signers["RS256"]
    now = int(time.time())
    header = {"alg": "HS256", "kid": rsa_signer.kid, "typ": "JWT"}
    body = {"iss": "https://idp.example", "aud": AUDIENCE, "iat": now, "exp": now + 300,
            "org": "acme"}  # fmt: skip

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    for secret in (rsa_signer.public_pem(), json.dumps(rsa_signer.public_jwk()).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        refused(get(service, f"{signing_input}.{b64(mac)}"))


def test_the_provider_rotating_its_key_is_picked_up(service, jwks, signers):
    old = signers["RS256"]
    assert get(service, old.token("https://rotating.example", group_name="acme")).status_code == 200
    new = Signer("RS256", "rs256-2")
    jwks.keys["rotating"] = [new.public_jwk(), old.public_jwk()]
    time.sleep(MIN_REFRESH + 0.2)  # the fetch for the first token was just now
    fetched = jwks.requests["rotating"]
    assert get(service, new.token("https://rotating.example", group_name="acme")).status_code == 200
    assert jwks.requests["rotating"] == fetched + 1
    # Both keys now verify without another fetch.
    assert get(service, old.token("https://rotating.example", group_name="acme")).status_code == 200
    assert jwks.requests["rotating"] == fetched + 1


def test_unknown_kids_refetch_at_most_once_per_min_refresh(service, jwks, signers):
    assert get(service, signers["EdDSA"].token("https://limited.example")).status_code == 437
    time.sleep(MIN_REFRESH + 0.2)
    before = jwks.requests["limited"]
    strangers = [Signer("ES256", f"unknown-{i}") for i in range(6)]
    for stranger in strangers:
        refused(get(service, stranger.token("https://limited.example")))
    assert jwks.requests["limited"] == before + 1
    # Once the interval has passed, an unknown kid may look again, once.
    time.sleep(MIN_REFRESH + 0.2)
    refused(get(service, strangers[0].token("https://limited.example")))
    refused(get(service, strangers[1].token("https://limited.example")))
    assert jwks.requests["limited"] == before + 2


def test_concurrent_unknown_kids_share_one_fetch(service, jwks):
    time.sleep(MIN_REFRESH + 0.2)
    before = jwks.requests.get("limited", 0)
    tokens = [Signer("EdDSA", f"crowd-{i}").token("https://limited.example") for i in range(8)]
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(get(service, t).status_code))
        for t in tokens
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [403] * 8
    assert jwks.requests["limited"] == before + 1


def test_a_hanging_jwks_endpoint_refuses_its_token_and_stalls_nobody(service, signers):
    own = service.token(group="acme")
    slow = signers["RS256"].token("https://slow.example", group_name="acme")
    outcome: dict[str, object] = {}

    def ask_slow() -> None:
        started = time.monotonic()
        outcome["response"] = get(service, slow)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=ask_slow)
    thread.start()
    time.sleep(0.2)  # the slow token's fetch is under way
    assert get(service, own).content == DOCUMENT_BYTES
    assert thread.is_alive()  # docproxy's own token was answered while the fetch still waited
    thread.join()
    refused(outcome["response"])
    assert outcome["seconds"] < TIMEOUT + 3  # the JWKS endpoint itself would hang for 30 s
    log = service.log()
    warnings = [line for line in log.splitlines() if "https://slow.example" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings
    assert slow not in log and slow.split(".")[2] not in log


def test_check_config_names_bad_issuer_keys(tmp_path):
    from tests.harness import base_config, merge, write_config

    config = merge(
        base_config(tmp_path),
        {
            "auth": {
                "jwks_timeout": 0,
                "issuers": [
                    {"audience": "a", "jwks_url": "http://127.0.0.1:9/", "algorithms": ["HS256"]},
                    {"issuer": "b", "audience": "a"},
                    {"issuer": "c", "audience": "a", "jwks_file": str(tmp_path / "none.json")},
                    {"issuer": "d", "audience": "a", "jwks_url": "ftp://x", "claims": {"grp": 1}},
                ],
            }
        },
    )
    path = write_config(tmp_path / "bad.yaml", config)
    result = run_cli(path, "check-config", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for expected in (
        "auth.jwks_timeout: must be more than 0",
        "auth.issuers[0].issuer: required",
        "auth.issuers[0].algorithms[0]: must be one of RS256, ES256, EdDSA (got 'HS256')",
        "auth.issuers[1].jwks_url: required (or jwks_file)",
        "auth.issuers[2].jwks_file: cannot read a JWKS from",
        "auth.issuers[3].jwks_url: must be an http(s) URL (got 'ftp://x')",
        "auth.issuers[3].claims.grp: unknown key",
    ):
        assert expected in result.stderr, (expected, result.stderr)


def test_sighup_picks_up_a_new_issuer(make_service, jwks, signers, tmp_path):
    jwks.keys["late"] = [signers["ES256"].public_jwk()]
    service = make_service()
    token = signers["ES256"].token("https://late.example")
    refused(get(service, token, "no-such-document"))
    config = yaml.safe_load(Path(service.config_path).read_text())
    config["auth"]["issuers"] = [issuer(jwks, "late", algorithms=["ES256"])]
    Path(service.config_path).write_text(yaml.safe_dump(config))
    service.process.send_signal(signal.SIGHUP)
    eventually(lambda: get(service, token, "no-such-document").status_code == 437)


def test_revoking_the_issuer_as_a_client_refuses_its_tokens(service, signers):
    token = signers["RS256"].token("https://rs-only.example", group_name="acme")
    assert get(service, token).status_code == 200
    run_cli(service.config_path, "revoke", "--client", "https://rs-only.example")
    try:
        eventually(lambda: get(service, token).status_code == 403)
    finally:
        run_cli(service.config_path, "revoke", "--remove", "--client", "https://rs-only.example")
    eventually(lambda: get(service, token).status_code == 200)
