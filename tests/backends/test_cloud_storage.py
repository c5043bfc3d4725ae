"""S3, GCS and Azure Blob backends against real local servers (moto, gcp-storage-emulator,
Azurite) the suite starts on free ports, with docproxy itself in a child process."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.cloud_servers import (
    AZURITE_ACCOUNT,
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    Azurite,
    FakeGCS,
    MotoS3,
    Store,
    new_bucket,
    start_store,
)
from tests.harness import assert_envelope

PDF_DISPOSITION = 'attachment; filename="Quarterly report.pdf"'
TTL = 900


@pytest.fixture(params=["s3", "gcs", "az"])
def store(request: pytest.FixtureRequest, stores: dict[str, Store]) -> Store:
    return stores[request.param]


class Catalog:
    """The operator's own SQLite database, which docproxy only reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (doc_id TEXT PRIMARY KEY, location TEXT,"
                " title TEXT, mime TEXT)"
            )

    def add(self, location: str, title: str = "Quarterly report.pdf", mime: str | None = None):
        document_id = str(uuid.uuid4())
        with sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?)", (document_id, location, title, mime)
            )
        return document_id

    def config(self) -> dict[str, Any]:
        return {
            "url": f"sqlite:///{self.path}",
            "embedded": False,
            "table": "files",
            "columns": {"id": "doc_id", "file_path": "location", "name": "title", "type": "mime"},
        }


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "operator.db")


def serve(make_service, catalog: Catalog, backends: dict[str, dict], stores: list[Store], **kw):
    env: dict[str, str] = {}
    for store in stores:
        env.update(store.env())
    overrides = {
        "catalog": catalog.config(),
        "storage": {"default": kw.pop("default", "local"), "backends": backends},
        **kw,
    }
    return make_service(overrides, env=env)


def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


def presign(service, document_id: str) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id},
        headers=auth(service),
        timeout=30,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- presigned URLs ---------------------------------------------------------------------------


def test_presigned_url_fetches_the_object_with_forced_headers(make_service, catalog, store):
    bucket = new_bucket(store)
    body = os.urandom(300_000)
    store.put(bucket, "reports/q3.bin", body)
    document_id = catalog.add(store.url(bucket, "reports/q3.bin"))
    backend = store.backend(bucket, public_endpoint_url=store.public_endpoint)
    service = serve(make_service, catalog, {"cloud": backend}, [store], presign={"ttl": TTL})

    response = presign(service, document_id)
    assert response.status_code == 200, response.text
    url = response.json()["data"]["download_url"]
    # The client sees the public endpoint, not the address the proxy uses.
    assert url.startswith(store.public_endpoint + "/")
    query = parse_qs(urlsplit(url).query)

    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert sha256(fetched.content) == sha256(body)
    assert fetched.headers["content-disposition"] == PDF_DISPOSITION
    if isinstance(store, FakeGCS):
        # The emulator ignores response-content-type; the signed URL still carries it.
        assert query["response-content-type"] == ["application/pdf"]
        verify_gcs_v4_signature(url, store, TTL)
    else:
        assert fetched.headers["content-type"] == "application/pdf"
    if isinstance(store, MotoS3):
        verify_sigv4(url, TTL)
    if isinstance(store, Azurite):
        assert query["sp"] == ["r"]  # read-only
        assert query["rscd"] == [PDF_DISPOSITION]
        assert query["rsct"] == ["application/pdf"]
        expiry = time.mktime(time.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert abs(expiry - (time.time() + TTL)) < 60
        # Azurite verifies SAS: any change to a signed field, or another signature, is refused.
        tampered = url.replace("rsct=application/pdf", "rsct=text/html")
        assert httpx.get(tampered, timeout=30).status_code == 403
        forged_sig = url.replace("sig=", "sig=A")
        assert httpx.get(forged_sig, timeout=30).status_code == 403
        escalated = url.replace("sp=r", "sp=rw")
        assert httpx.get(escalated, timeout=30).status_code == 403


def verify_sigv4(url: str, ttl: int) -> None:
    """Recompute the SigV4 query signature with botocore (moto itself checks nothing)."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(pairs)
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"  # SigV4, never legacy SigV2
    assert "Signature" not in params and "AWSAccessKeyId" not in params
    assert params["X-Amz-Expires"] == str(ttl)
    assert params["X-Amz-Credential"].split("/")[2] == S3_REGION
    assert params["response-content-disposition"] == PDF_DISPOSITION
    assert params["response-content-type"] == "application/pdf"
    signed_at = time.mktime(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert abs(signed_at - time.time()) < 60

    def signature_for(secret: str, query_pairs: list[tuple[str, str]]) -> str:
        unsigned = [(k, v) for k, v in query_pairs if k != "X-Amz-Signature"]
        request = AWSRequest(
            method="GET",
            url=urlunsplit(parts._replace(query=urlencode(unsigned, quote_via=quote))),
        )
        request.context["timestamp"] = params["X-Amz-Date"]
        signer = S3SigV4QueryAuth(Credentials(S3_KEY, secret), "s3", S3_REGION, expires=ttl)
        canonical = signer.canonical_request(request)
        return signer.signature(signer.string_to_sign(request, canonical), request)

    assert signature_for(S3_SECRET, pairs) == params["X-Amz-Signature"]
    # The check has teeth: another secret, or an altered override, gives another signature.
    assert signature_for("wrong-secret", pairs) != params["X-Amz-Signature"]
    altered = [(k, "text/html" if k == "response-content-type" else v) for k, v in pairs]
    assert signature_for(S3_SECRET, altered) != params["X-Amz-Signature"]


def verify_gcs_v4_signature(url: str, store: FakeGCS, ttl: int) -> None:
    """Check the GOOG4-RSA-SHA256 signature with the service account's public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(pairs)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == str(ttl)
    assert params["response-content-disposition"] == PDF_DISPOSITION
    account = store.service_account()
    assert params["X-Goog-Credential"].startswith(account["client_email"] + "/")

    def string_to_sign(query_pairs: list[tuple[str, str]]) -> bytes:
        canonical_query = "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}"
            for k, v in sorted(query_pairs)
            if k != "X-Goog-Signature"
        )
        canonical_request = "\n".join(
            [
                "GET",
                parts.path,
                canonical_query,
                f"host:{parts.netloc}\n",
                "host",
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = params["X-Goog-Credential"].split("/", 1)[1]
        return "\n".join(
            [
                "GOOG4-RSA-SHA256",
                params["X-Goog-Date"],
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        ).encode()

    private_key = serialization.load_pem_private_key(account["private_key"].encode(), None)
    public_key = private_key.public_key()
    signature = bytes.fromhex(params["X-Goog-Signature"])
    public_key.verify(signature, string_to_sign(pairs), padding.PKCS1v15(), hashes.SHA256())
    altered = [(k, "text/html" if k == "response-content-type" else v) for k, v in pairs]
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, string_to_sign(altered), padding.PKCS1v15(), hashes.SHA256())


def test_expired_sas_is_refused_by_azurite(make_service, catalog, stores):
    store = stores["az"]
    bucket = new_bucket(store)
    store.put(bucket, "short.txt", b"short-lived")
    document_id = catalog.add(store.url(bucket, "short.txt"), title="short.txt")
    service = serve(
        make_service, catalog, {"cloud": store.backend(bucket)}, [store], presign={"ttl": 3}
    )
    url = presign(service, document_id).json()["data"]["download_url"]
    # A SAS expiry (se) has whole seconds: with a 3 s ttl the link holds for 2 s at least.
    expires = datetime.strptime(parse_qs(urlsplit(url).query)["se"][0], "%Y-%m-%dT%H:%M:%SZ")
    expires_at = expires.replace(tzinfo=UTC).timestamp()
    assert httpx.get(url, timeout=30).status_code == 200 or time.time() >= expires_at
    time.sleep(max(0.0, expires_at - time.time()) + 1.5)  # Azurite's clock check is coarse
    assert httpx.get(url, timeout=30).status_code == 403


def test_presign_proxy_mode_hands_out_the_proxys_link(make_service, catalog, store):
    bucket = new_bucket(store)
    body = os.urandom(50_000)
    store.put(bucket, "a.bin", body)
    document_id = catalog.add(store.url(bucket, "a.bin"))
    backend = store.backend(bucket, presign="proxy")
    service = serve(make_service, catalog, {"cloud": backend}, [store])
    url = presign(service, document_id).json()["data"]["download_url"]
    assert url.startswith(f"{service.base_url}/links/")
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert sha256(fetched.content) == sha256(body)


# -- streaming through the proxy ---------------------------------------------------------------


def test_stream_through_proxy_full_url_and_relative_path(make_service, catalog, store):
    bucket = new_bucket(store)
    body = os.urandom(3 * 1024 * 1024 + 123)
    store.put(bucket, "tenant/a/scan.bin", body)
    store.put(bucket, "docs/letters/b.txt", b"relative path, default backend\n")
    by_url = catalog.add(store.url(bucket, "tenant/a/scan.bin"))
    relative = catalog.add("letters/b.txt", title="letter.txt")
    backend = store.backend(bucket, prefix="docs", chunk_size="256KiB")
    service = serve(make_service, catalog, {"cloud": backend}, [store], default="cloud")

    response = httpx.get(f"{service.base_url}/download/{by_url}", headers=auth(service), timeout=60)
    assert response.status_code == 200
    assert sha256(response.content) == sha256(body)
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == PDF_DISPOSITION

    response = httpx.get(f"{service.base_url}/download/{relative}", headers=auth(service))
    assert response.status_code == 200
    assert response.content == b"relative path, default backend\n"
    assert response.headers["content-type"].startswith("text/plain")

    service.stop()
    log = service.log()
    for trouble in ("Unclosed", "Loop is not running", "Traceback", "was never awaited"):
        assert trouble not in log, log


def test_missing_unknown_and_escaping_paths_are_437(make_service, catalog, store):
    bucket = new_bucket(store)
    missing = catalog.add(store.url(bucket, "not/there.pdf"))
    other_bucket = catalog.add(store.url("unconfigured-bucket", "x.pdf"))
    unknown_scheme = catalog.add("ftp://host/x.pdf")
    escaping_url = catalog.add(store.url(bucket, "a/../../etc/passwd"))
    escaping_relative = catalog.add("../outside.pdf")
    service = serve(
        make_service, catalog, {"cloud": store.backend(bucket)}, [store], default="cloud"
    )
    headers = auth(service)
    for document_id in (missing, other_bucket, unknown_scheme, escaping_url, escaping_relative):
        get = httpx.get(f"{service.base_url}/download/{document_id}", headers=headers)
        assert_envelope(get, 437, "Document not found")
        assert_envelope(presign(service, document_id), 437, "Document not found")
    log = service.log()
    assert "is missing from the store" in log
    assert "no configured backend serves" in log
    assert "parent reference" in log


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
def test_store_down_gives_the_apis_500(make_service, catalog, tmp_path, kind):
    store = start_store(kind, tmp_path / "dedicated")
    try:
        bucket = new_bucket(store)
        store.put(bucket, "doc.pdf", b"%PDF-1.4 soon unreachable")
        document_id = catalog.add(store.url(bucket, "doc.pdf"))
        # Never presigned before the store goes: no still-fresh URL can be reused for it.
        unsigned_id = catalog.add(store.url(bucket, "doc.pdf"), title="Other name.pdf")
        backend = store.backend(bucket, timeout=3)
        service = serve(make_service, catalog, {"cloud": backend}, [store])
        first = presign(service, document_id)
        assert first.status_code == 200
    finally:
        store.stop()
    get = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth(service), timeout=60)
    assert_envelope(get, 500, "Failed to download document")
    assert_envelope(presign(service, unsigned_id), 500, "Failed to generate download URL")
    # A URL signed moments ago is handed out again without asking the store (presign.reuse_margin).
    assert presign(service, document_id).json() == first.json()
    assert "storage failed on stat" in service.log()


def test_large_object_streams_with_flat_memory(make_service, catalog, store):
    size = 200 * 1024 * 1024
    bucket = new_bucket(store)
    block = os.urandom(1024 * 1024)
    body = block * (size // len(block))
    store.put(bucket, "big.bin", body)
    expected = sha256(body)
    del body
    document_id = catalog.add(store.url(bucket, "big.bin"), title="big.bin")
    warmup = catalog.add(store.url(bucket, "big.bin"), title="warm.bin")
    service = serve(make_service, catalog, {"cloud": store.backend(bucket)}, [store])
    headers = auth(service)
    # Warm up the clients and code paths, then take the baseline.
    with httpx.stream("GET", f"{service.base_url}/download/{warmup}", headers=headers) as r:
        for _ in r.iter_bytes(1024 * 1024):
            break
    baseline, _ = service.memory_kib()
    digest = hashlib.sha256()
    received = 0
    highest = baseline
    started = time.monotonic()
    with httpx.stream(
        "GET", f"{service.base_url}/download/{document_id}", headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes(1024 * 1024):
            digest.update(chunk)
            received += len(chunk)
            if received % (16 * 1024 * 1024) < len(chunk):
                highest = max(highest, service.memory_kib()[0])
    elapsed = time.monotonic() - started
    print(f"{store.label}: 200 MiB in {elapsed:.2f}s, RSS {baseline} -> max {highest} KiB")
    assert received == size
    assert digest.hexdigest() == expected
    # A whole object would add 200 MiB; a few chunks in flight stay far below this.
    assert highest - baseline < 48 * 1024, (baseline, highest)


# -- several stores at once -------------------------------------------------------------------


def test_backends_of_different_kinds_serve_side_by_side(make_service, catalog, stores):
    chosen = [stores["s3"], stores["az"], stores["gcs"]]
    backends: dict[str, dict] = {}
    documents: list[tuple[str, bytes, Store]] = []
    for index, store in enumerate(chosen):
        bucket = new_bucket(store)
        body = f"{store.label} document {index}\n".encode() * 1000
        store.put(bucket, f"shared/name-{index}.txt", body)
        backends[f"{store.protocol}-store"] = store.backend(bucket)
        documents.append(
            (catalog.add(store.url(bucket, f"shared/name-{index}.txt"), "n.txt"), body, store)
        )
    service = serve(make_service, catalog, backends, chosen)
    headers = auth(service)
    for document_id, body, store in documents:
        got = httpx.get(f"{service.base_url}/download/{document_id}", headers=headers)
        assert got.status_code == 200
        assert got.content == body
        url = presign(service, document_id).json()["data"]["download_url"]
        assert url.startswith(store.endpoint + "/")
        assert httpx.get(url, timeout=30).content == body


def test_azure_account_key_with_an_http_endpoint_reaches_azurite(make_service, catalog, stores):
    """``account_name`` + ``account_key_env`` + an ``http://`` ``endpoint_url``: plain HTTP."""
    store = stores["az"]
    bucket = new_bucket(store)
    store.put(bucket, "plain.txt", b"over plain http")
    document_id = catalog.add(store.url(bucket, "plain.txt"), title="plain.txt")
    service = serve(make_service, catalog, {"cloud": store.key_backend(bucket)}, [store])
    got = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth(service))
    assert got.status_code == 200, got.text
    assert got.content == b"over plain http"
    url = presign(service, document_id).json()["data"]["download_url"]
    assert url.startswith(f"{store.endpoint}/{AZURITE_ACCOUNT}/{bucket}/plain.txt?")
    assert httpx.get(url, timeout=30).content == b"over plain http"


def test_azure_url_with_account_netloc_routes_to_the_container(make_service, catalog, stores):
    store = stores["az"]
    bucket = new_bucket(store)
    store.put(bucket, "x.txt", b"abfs form")
    document_id = catalog.add(f"abfs://{bucket}@{AZURITE_ACCOUNT}.dfs.core.windows.net/x.txt")
    service = serve(make_service, catalog, {"cloud": store.backend(bucket)}, [store])
    got = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth(service))
    assert got.status_code == 200
    assert got.content == b"abfs form"


# -- object keys with reserved characters -----------------------------------------------------

# Keys as stored, with space, #, +, (, ), ü, &, =, ?, and % (alone, and before two hex digits).
RESERVED_KEYS = ("odd/Q1 report #1+final (ü)&x=1?.pdf", "odd/50% off=yes+more (%41).pdf")


@pytest.mark.parametrize("kind", ["file", "s3", "gcs", "az"])
def test_keys_with_reserved_characters_as_raw_or_percent_encoded_urls(
    make_service, catalog, stores, tmp_path, kind
):
    """The same object by its raw URL, its percent-encoded URL and its relative path."""
    bodies = {key: f"{kind}: {key}\n".encode() * 100 for key in RESERVED_KEYS}
    if kind == "file":
        root = tmp_path / "files"  # the local backend of the base config
        for key, body in bodies.items():
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(body)
        backends: dict[str, dict] = {}
        used: list[Store] = []
        default = "local"

        def url(key: str, encode: bool) -> str:
            path = str(root / key)
            return f"file://{quote(path) if encode else path}"
    else:
        store = stores[kind]
        bucket = new_bucket(store)
        for key, body in bodies.items():
            store.put(bucket, key, body)
        backends, used, default = {"cloud": store.backend(bucket)}, [store], "cloud"

        def url(key: str, encode: bool) -> str:
            return store.url(bucket, quote(key) if encode else key)

    rows = []
    for key, body in bodies.items():
        for path in (url(key, encode=False), url(key, encode=True), key):
            rows.append((catalog.add(path, title="report.pdf"), path, body))
    climbing = catalog.add(url("odd/%2E%2E/%2E%2E/%2E%2E/etc/passwd", encode=False))
    service = serve(make_service, catalog, backends, used, default=default)
    headers = auth(service)
    got = httpx.get(f"{service.base_url}/download/{climbing}", headers=headers)
    assert_envelope(got, 437, "Document not found")
    assert f"document {climbing!r} has a refused file path: " in service.log()
    assert "(the URL path, read as percent-encoded)" in service.log()
    for document_id, path, body in rows:
        got = httpx.get(f"{service.base_url}/download/{document_id}", headers=headers)
        assert got.status_code == 200, (path, got.text)
        assert got.content == body, path
        posted = presign(service, document_id)
        assert posted.status_code == 200, (path, posted.text)
        fetched = httpx.get(posted.json()["data"]["download_url"], timeout=30)
        assert fetched.status_code == 200, (path, fetched.text)
        assert fetched.content == body, path


def test_presigned_url_carries_an_inline_disposition(make_service, catalog, store):
    """disposition=inline reaches the store's URL (S3 ResponseContentDisposition, GCS
    response-content-disposition, Azure rscd) and the store answers with it."""
    bucket = new_bucket(store)
    store.put(bucket, "inline/q3.pdf", b"%PDF-1.4 inline")
    document_id = catalog.add(store.url(bucket, "inline/q3.pdf"))
    backend = store.backend(bucket, public_endpoint_url=store.public_endpoint)
    service = serve(make_service, catalog, {"cloud": backend}, [store], presign={"ttl": TTL})
    inline = 'inline; filename="Quarterly report.pdf"'
    response = httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id, "disposition": "inline"},
        headers=auth(service),
        timeout=30,
    )
    url = response.json()["data"]["download_url"]
    query = parse_qs(urlsplit(url).query)
    name = "rscd" if isinstance(store, Azurite) else "response-content-disposition"
    assert query[name] == [inline]
    assert httpx.get(url, timeout=30).headers["content-disposition"] == inline
    # The attachment URL of the same document is another URL, not the inline one reused.
    plain = presign(service, document_id).json()["data"]["download_url"]
    assert parse_qs(urlsplit(plain).query)[name] == [PDF_DISPOSITION]
