"""Replicas are interchangeable: two docproxy processes with one config (a PostgreSQL catalog, S3
through moto) behind a real nginx; what one replica hands out, the other honours. Every request
is checked to have reached the replica meant, by nginx's own ``$upstream_addr``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cloud_servers import new_bucket
from tests.conftest import require_server
from tests.deploy.balancer import BalancedReplicas, nginx_binary
from tests.harness import CLIENT_ID, CLIENT_SECRET, LINK_KEY, TOKEN_KEY, write_config
from tests.sql_servers import POSTGRES_URL, ScratchDatabase, reachable

DOCUMENT_ID = "replicated-report"
BODY = b"%PDF-1.7\n" + os.urandom(6 * 1024 * 1024 + 321)
DIGEST = hashlib.sha256(BODY).hexdigest()
TOKEN_REQUEST = {
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
    "fingerprint": "replica-test",
    "user": {"email": "jane@example.com"},
}


@pytest.fixture
def balanced(stores, tmp_path: Path) -> Iterator[BalancedReplicas]:
    """Two replicas and nginx; the document is in S3 and its row in PostgreSQL."""
    binary = nginx_binary()
    if binary is None:
        require_server("nginx", "not installed (apt-get install -y nginx)")
    problem = reachable(POSTGRES_URL)
    if problem is not None:
        require_server("PostgreSQL", problem)
    s3 = stores["s3"]
    bucket = new_bucket(s3)
    s3.put(bucket, "reports/2026/q1.pdf", BODY)
    database = ScratchDatabase("postgresql", tmp_path).create()
    database.run(
        "CREATE TABLE replica_documents (doc_id text PRIMARY KEY, object_key text, title text)",
        (
            "INSERT INTO replica_documents VALUES (:id, :key, :title)",
            {"id": DOCUMENT_ID, "key": "reports/2026/q1.pdf", "title": "Q1 report.pdf"},
        ),
    )
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {
            "signing_key": TOKEN_KEY,
            "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        },
        "presign": {"signing_key": LINK_KEY},
        "catalog": {
            "url": database.url,
            "table": "replica_documents",
            "columns": {"id": "doc_id", "file_path": "object_key", "name": "title"},
        },
        "storage": {"default": "s3", "backends": {"s3": s3.backend(bucket, presign="proxy")}},
    }
    cluster = BalancedReplicas(
        binary, tmp_path, write_config(tmp_path / "config.yaml", config), s3.env()
    )
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()
        database.drop()


def token_from(cluster: BalancedReplicas, index: int) -> dict[str, str]:
    issued = cluster.request_on(index, "POST", "/generate-client-auth-token", json=TOKEN_REQUEST)
    assert issued.status_code == 200, issued.text
    return {"Authorization": f"Bearer {issued.json()['data']['access_token']}"}


def test_a_token_issued_by_one_replica_is_accepted_by_the_other(balanced):
    for issuer, verifier in ((0, 1), (1, 0)):
        auth = token_from(balanced, issuer)
        response = balanced.request_on(verifier, "GET", f"/download/{DOCUMENT_ID}", headers=auth)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == DIGEST
        assert response.headers["content-disposition"] == 'attachment; filename="Q1 report.pdf"'


def test_a_proxy_link_made_by_one_replica_downloads_from_the_other(balanced):
    auth = token_from(balanced, 1)
    made = balanced.request_on(
        0, "POST", "/download", json={"document_id": DOCUMENT_ID}, headers=auth
    )
    link = made.json()["data"]["download_url"]
    assert link.startswith(f"{balanced.url}/links/{DOCUMENT_ID}?"), link  # the balancer's host
    response = balanced.request_on(1, "GET", link.removeprefix(balanced.url))
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == DIGEST


def test_a_download_cut_on_one_replica_resumes_on_the_other(balanced):
    auth = token_from(balanced, 0)
    received = bytearray()
    with balanced.stream_on(0, "GET", f"/download/{DOCUMENT_ID}", headers=auth) as first:
        assert first.status_code == 200
        validator = first.headers["etag"]
        for chunk in first.iter_bytes():
            received += chunk
            if len(received) >= 2 * 1024 * 1024:
                break  # the connection drops mid-body
    assert len(received) < len(BODY)

    rest = balanced.request_on(
        1,
        "GET",
        f"/download/{DOCUMENT_ID}",
        headers={**auth, "Range": f"bytes={len(received)}-", "If-Range": validator},
    )
    assert rest.status_code == 206, rest.text  # the validator matched on the other replica
    assert rest.headers["etag"] == validator
    assert rest.headers["content-range"] == f"bytes {len(received)}-{len(BODY) - 1}/{len(BODY)}"
    assert hashlib.sha256(bytes(received) + rest.content).hexdigest() == DIGEST


def test_gets_move_to_the_other_replica_while_one_is_down(balanced):
    """The harness itself: a replica stopped and started again on its own port."""
    auth = token_from(balanced, 0)
    balanced.stop(1)
    upstreams = []
    for _ in range(4):
        response = httpx.get(f"{balanced.url}/download/{DOCUMENT_ID}", headers=auth, timeout=30)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == DIGEST
        upstreams.append(response.headers["x-upstream"])
    # Round robin tried the stopped one once, and nginx moved that GET on to the running one.
    assert f"{balanced.address(1)}, {balanced.address(0)}" in upstreams
    assert all(upstream.endswith(balanced.address(0)) for upstream in upstreams)

    balanced.start(1)
    response = balanced.request_on(1, "GET", f"/download/{DOCUMENT_ID}", headers=auth)
    assert hashlib.sha256(response.content).hexdigest() == DIGEST
