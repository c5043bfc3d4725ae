"""Revocation end to end: ``docproxy revoke`` against live services, in the SQLite state of one
host and in Redis shared by two processes."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.harness import run_cli
from tests.state.shared import claims, eventually, status

pytestmark = pytest.mark.timeout(120)


def add_document(service, tmp_path, document_id: str) -> str:
    source = tmp_path / f"{document_id}.txt"
    source.write_bytes(b"revocable bytes\n")
    run_cli(service.config_path, "documents", "add", "--id", document_id, str(source))
    return document_id


def link(service, token: str, document_id: str) -> str:
    response = httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]["download_url"]


def refused(url: str, token: str | None = None, method: str = "GET", **kwargs) -> bool:
    response = httpx.request(
        method,
        url,
        headers={"authorization": f"Bearer {token}"} if token else {},
        timeout=10,
        **kwargs,
    )
    if response.status_code != 403:
        return False
    assert response.json() == {"statusCode": 403, "data": {}, "message": "UNAUTHORIZED"}
    return True


def test_a_revoked_token_is_refused_until_the_revocation_is_removed(make_service, tmp_path):
    service = make_service()
    document = add_document(service, tmp_path, "doc-token")
    token, other = service.token(), service.token()
    url = f"{service.base_url}/download/{document}"
    assert status("GET", url, token) == 200
    jti = claims(token)["jti"]
    out = run_cli(service.config_path, "revoke", "--token-id", jti).stdout
    assert jti in out
    eventually(lambda: refused(url, token))
    assert refused(f"{service.base_url}/download", token, "POST", json={"document_id": document})
    assert status("GET", url, other) == 200  # another token of the same client is untouched
    listing = run_cli(service.config_path, "revoke", "--list").stdout
    assert f"token\t{jti}\t" in listing
    run_cli(service.config_path, "revoke", "--remove", "--token-id", jti)
    eventually(lambda: status("GET", url, token) == 200)
    assert run_cli(service.config_path, "revoke", "--list").stdout == ""


def test_revoking_a_client_refuses_its_earlier_tokens_not_later_ones(make_service, tmp_path):
    service = make_service()
    document = add_document(service, tmp_path, "doc-client")
    url = f"{service.base_url}/download/{document}"
    before = service.token()
    run_cli(service.config_path, "revoke", "--client", "test-client")
    eventually(lambda: refused(url, before))
    time.sleep(1.05)  # iat has whole seconds: a token of the revocation's second is refused
    after = service.token()
    assert claims(after)["iat"] > claims(before)["iat"]
    assert status("GET", url, after) == 200
    assert refused(url, before)


def test_a_revoked_document_refuses_links_downloads_and_new_links(make_service, tmp_path):
    service = make_service()
    document = add_document(service, tmp_path, "doc-revoked")
    kept = add_document(service, tmp_path, "doc-kept")
    token = service.token()
    old_link = link(service, token, document)
    assert status("GET", old_link) == 200
    run_cli(service.config_path, "revoke", "--document", document)
    eventually(lambda: refused(old_link))
    assert refused(f"{service.base_url}/download/{document}", token)
    assert refused(f"{service.base_url}/download", token, "POST", json={"document_id": document})
    assert status("GET", link(service, token, kept)) == 200


def test_a_revocation_lapses_at_its_until_time(make_service, tmp_path):
    service = make_service()
    document = add_document(service, tmp_path, "doc-lapse")
    token = service.token()
    url = f"{service.base_url}/download/{document}"
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
    run_cli(service.config_path, "revoke", "--document", document, "--until", until)
    eventually(lambda: refused(url, token))
    eventually(lambda: status("GET", url, token) == 200, within=12)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--document", "x", "--until", "yesterday"], "--until: not an ISO 8601 time: 'yesterday'"),
        (["--document", "x", "--until", "2001-01-01"], "--until: 2001-01-01 has already passed"),
        (["--remove", "--client", "nobody"], "no revocation of client 'nobody'"),
        (["--list", "--remove"], "--list takes neither --remove nor --until"),
    ],
)
def test_revoke_refuses_what_it_cannot_do_in_one_line(tmp_path, args, message):
    from tests.harness import base_config, write_config

    config = write_config(tmp_path / "config.yaml", base_config(tmp_path))
    result = run_cli(config, "revoke", *args, check=False)
    assert result.returncode == 1
    assert result.stderr == f"docproxy: {message}\n"


def test_two_processes_sharing_redis_both_see_a_revocation(make_service, tmp_path, redis_state):
    first = make_service(redis_state)
    second = make_service(redis_state)  # same folder, same catalog, same Redis prefix
    document = add_document(first, tmp_path, "doc-shared")
    token = first.token()
    urls = [f"{s.base_url}/download/{document}" for s in (first, second)]
    assert [status("GET", u, token) for u in urls] == [200, 200]
    run_cli(first.config_path, "revoke", "--token-id", claims(token)["jti"])
    for url in urls:
        eventually(lambda url=url: refused(url, token))
    run_cli(second.config_path, "revoke", "--remove", "--token-id", claims(token)["jti"])
    for url in urls:
        eventually(lambda url=url: status("GET", url, token) == 200)
