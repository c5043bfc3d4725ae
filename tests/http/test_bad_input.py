"""The API's 435/437 answers, bad bodies, unknown routes: always the envelope, never a 500."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess

import httpx
import pytest

from tests.harness import assert_envelope, run_cli
from tests.samples import insert_document

MISSING_ID = "Document ID is required"
NOT_FOUND = "Document not found"
NO_FILE = "Document has no file path"


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service()
    folder = tmp_path_factory.mktemp("docs")
    (folder / "present.txt").write_bytes(b"present")
    run_cli(service.config_path, "documents", "add", str(folder / "present.txt"), "--id", "here")
    run_cli(
        service.config_path, "documents", "add-url", "https://example.com/doc.pdf",
        "--id", "url-doc", "--name", "Linked",
    )  # fmt: skip
    (folder / "vanishing.txt").write_bytes(b"vanishing")
    run_cli(
        service.config_path, "documents", "add", str(folder / "vanishing.txt"), "--id", "vanished"
    )
    for stored in (service.config_path.parent / "files").iterdir():
        if stored.read_bytes() == b"vanishing":
            stored.unlink()
    db = service.config_path.parent / "docproxy.db"
    insert_document(db, "no-path-no-url", name="Nothing")
    insert_document(db, "blank-path", file_path="   ", name="Blank")
    insert_document(db, "a-folder", file_path="folder", name="Folder")
    (service.config_path.parent / "files" / "folder").mkdir()
    (service.config_path.parent / "files" / "deleted.txt").write_bytes(b"deleted")
    insert_document(db, "soft-deleted", file_path="deleted.txt", deleted_at="2024-01-01T00:00:00Z")
    return service


@pytest.fixture(scope="module")
def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


def post_json(service, auth, body: object) -> httpx.Response:
    return httpx.post(f"{service.base_url}/download", headers=auth, json=body)


@pytest.mark.parametrize(
    "body",
    [{}, {"document_id": ""}, {"document_id": "   "}, {"document_id": "\t\n"},
     {"document_id": None}, {"document_id": 123}, {"document_id": 0}, {"document_id": True},
     {"document_id": ["here"]}, {"document_id": {"id": "here"}}, {"documentId": "here"},
     {"document_id": "a\x00b"}],
    ids=["absent", "empty", "blank", "whitespace", "null", "number", "zero", "bool", "list",
         "object", "wrong-key", "nul-byte"],
)  # fmt: skip
def test_post_without_a_usable_id_is_435(service, auth, body):
    assert_envelope(post_json(service, auth, body), 435, MISSING_ID)


def test_post_with_an_empty_body_is_435(service, auth):
    response = httpx.post(
        f"{service.base_url}/download",
        headers={**auth, "Content-Type": "application/json"},
        content=b"",
    )
    assert_envelope(response, 435, MISSING_ID)


@pytest.mark.parametrize("path", ["/download/", "/download", "/download/%20", "/download/%20%20"])
def test_get_without_an_id_is_435(service, auth, path):
    assert_envelope(httpx.get(f"{service.base_url}{path}", headers=auth), 435, MISSING_ID)


def test_unknown_id_is_437(service, auth):
    assert_envelope(post_json(service, auth, {"document_id": "nope"}), 437, NOT_FOUND)
    response = httpx.get(f"{service.base_url}/download/nope", headers=auth)
    assert_envelope(response, 437, NOT_FOUND)


def test_ids_are_exact_not_patterns(service, auth):
    for near_miss in ("HERE", "here ", " here", "her%", "h_re", "here/", "here/x"):
        response = httpx.get(f"{service.base_url}/download/{near_miss}", headers=auth)
        assert_envelope(response, 437, NOT_FOUND)


@pytest.mark.parametrize("document_id", ["url-doc", "no-path-no-url", "blank-path"])
def test_document_without_a_file_path_is_435(service, auth, document_id):
    assert_envelope(post_json(service, auth, {"document_id": document_id}), 435, NO_FILE)
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert_envelope(response, 435, NO_FILE)


@pytest.mark.parametrize("document_id", ["vanished", "a-folder", "soft-deleted"])
def test_file_missing_from_the_store_is_437(service, auth, document_id):
    assert_envelope(post_json(service, auth, {"document_id": document_id}), 437, NOT_FOUND)
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert_envelope(response, 437, NOT_FOUND)


def test_missing_object_is_logged(service, auth):
    httpx.get(f"{service.base_url}/download/vanished", headers=auth)
    assert "'vanished': object" in service.log() and "missing from the store" in service.log()


@pytest.mark.parametrize(
    ("content", "content_type", "message"),
    [
        (b'{"document_id": "here"', "application/json", "Malformed JSON body"),
        (b"document_id=here", "application/json", "Malformed JSON body"),
        (b"\xff\xfe\x00", "application/json", "Malformed JSON body"),
        (b"[" * 30_000 + b"]" * 30_000, "application/json", "Malformed JSON body"),
        (b'["here"]', "application/json", "Request body must be a JSON object"),
        (b'"here"', "application/json", "Request body must be a JSON object"),
        (b"null", "application/json", "Request body must be a JSON object"),
        (b"42", "application/json", "Request body must be a JSON object"),
        (b'{"document_id": "here"}', "text/plain", "Content-Type must be application/json"),
        (b'{"document_id": "here"}', "application/x-www-form-urlencoded",
         "Content-Type must be application/json"),
        (b'{"document_id": "here"}', "", "Content-Type must be application/json"),
        (b'{"document_id": "here"}', "application/jsonp", "Content-Type must be application/json"),
        (b'{"document_id": "' + b"x" * 70_000 + b'"}', "application/json",
         "Request body is larger than 65536 bytes"),
    ],
    ids=["truncated", "form-body", "not-utf8", "deep-nesting", "array", "string", "null",
         "number", "text-plain", "form", "no-content-type", "jsonp", "too-large"],
)  # fmt: skip
def test_bad_bodies_are_435_with_a_precise_message(service, auth, content, content_type, message):
    headers = {**auth}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(f"{service.base_url}/download", headers=headers, content=content)
    assert_envelope(response, 435, message)


def test_json_content_type_with_charset_is_accepted(service, auth):
    response = httpx.post(
        f"{service.base_url}/download",
        headers={**auth, "Content-Type": "Application/JSON; charset=utf-8"},
        content=json.dumps({"document_id": "here"}).encode(),
    )
    assert response.status_code == 200
    assert response.json()["data"]["download_url"].startswith(service.base_url)


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/", 404, "Route not found"),
        ("GET", "/nothing/here", 404, "Route not found"),
        ("POST", "/downloads", 404, "Route not found"),
        ("GET", "/links", 404, "Route not found"),
        ("GET", "/healthz/", 404, "Route not found"),
        ("GET", "/generate-client-auth-token/", 404, "Route not found"),
        ("DELETE", "/download/here", 405, "Method not allowed"),
        ("PUT", "/download", 405, "Method not allowed"),
        ("PATCH", "/download/here", 405, "Method not allowed"),
        ("POST", "/download/here", 405, "Method not allowed"),
        ("GET", "/generate-client-auth-token", 405, "Method not allowed"),
        ("POST", "/healthz", 405, "Method not allowed"),
        ("POST", "/links/here", 405, "Method not allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_in_the_envelope(service, auth, method, path, status,
                                                          message):  # fmt: skip
    response = httpx.request(method, f"{service.base_url}{path}", headers=auth)
    assert_envelope(response, status, message)
    if status == 405:
        assert response.headers.get("allow")


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_non_standard_statuses_reach_the_wire(service, auth):
    """435 and 437 are not IANA codes: check the status line itself, and three clients."""
    request = (
        b"GET /download/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: {auth['Authorization']}\r\n\r\n".encode()
    )
    raw = raw_exchange(service.port, request)
    status_line = raw.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 437"), status_line
    assert raw.endswith(b'{"statusCode":437,"data":{},"message":"Document not found"}')

    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    connection.request("GET", "/download/", headers=auth)
    answer = connection.getresponse()
    assert answer.status == 435
    assert json.loads(answer.read())["statusCode"] == 435
    connection.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_sees_the_api_statuses(service, auth):
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         f"{service.base_url}/download", "-H", "Content-Type: application/json",
         "-H", f"Authorization: {auth['Authorization']}", "-d", '{"document_id": ""}'],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout == "435"


def test_no_request_above_produced_a_traceback(service):
    assert "Traceback" not in service.log()
    assert "unhandled error" not in service.log()
