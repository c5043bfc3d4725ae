import httpx

from tests.harness import assert_envelope, run_cli


def test_service_starts_and_serves(make_service, tmp_path):
    service = make_service()
    sample = tmp_path / "a.txt"
    sample.write_text("hello")
    document_id = run_cli(service.config_path, "documents", "add", str(sample)).stdout.strip()
    token = service.token()
    response = httpx.get(
        f"{service.base_url}/download/{document_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.content == b"hello"
    # A sidecar does not name its server software; the Date header HTTP asks for stays.
    assert "server" not in response.headers
    assert "date" in response.headers
    assert_envelope(httpx.get(f"{service.base_url}/download/x"), 403, "UNAUTHORIZED")
