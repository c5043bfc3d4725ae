"""auth.bind_fingerprint: a token serves only requests carrying its device's fingerprint."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import CLIENT_ID, CLIENT_SECRET, assert_envelope, run_cli

FINGERPRINT = "test-fingerprint"  # what Service.token() asks for


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service({"auth": {"bind_fingerprint": True}})
    sample = tmp_path_factory.mktemp("bound") / "bound.txt"
    sample.write_bytes(b"bound to a device")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "bound")
    return service


def download(service, token: str, fingerprint: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if fingerprint is not None:
        headers["X-Device-Fingerprint"] = fingerprint
    return httpx.get(f"{service.base_url}/download/bound", headers=headers)


def test_the_tokens_own_fingerprint_is_served(service):
    response = download(service, service.token(), FINGERPRINT)
    assert response.status_code == 200 and response.content == b"bound to a device"
    presign = httpx.post(
        f"{service.base_url}/download",
        json={"document_id": "bound"},
        headers={"Authorization": f"Bearer {service.token()}", "X-Device-Fingerprint": FINGERPRINT},
    )
    assert presign.status_code == 200


@pytest.mark.parametrize(
    "presented", [None, "", "other-device", FINGERPRINT + "x", "TEST-FINGERPRINT"]
)
def test_another_or_no_fingerprint_is_403(service, presented):
    assert_envelope(download(service, service.token(), presented), 403, "UNAUTHORIZED")
    presign = httpx.post(
        f"{service.base_url}/download",
        json={"document_id": "bound"},
        headers={"Authorization": f"Bearer {service.token()}"}
        | ({} if presented is None else {"X-Device-Fingerprint": presented}),
    )
    assert_envelope(presign, 403, "UNAUTHORIZED")


def test_a_token_without_a_fingerprint_claim_is_refused(service):
    response = httpx.post(
        f"{service.base_url}/generate-client-auth-token",
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    )
    token = response.json()["data"]["access_token"]
    assert_envelope(download(service, token, ""), 403, "UNAUTHORIZED")
    assert_envelope(download(service, token, "anything"), 403, "UNAUTHORIZED")


def test_without_binding_the_header_is_not_needed(make_service, tmp_path):
    service = make_service()
    sample = tmp_path / "bound.txt"
    sample.write_bytes(b"free")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "bound")
    assert download(service, service.token(), None).status_code == 200
    assert download(service, service.token(), "other-device").status_code == 200
