"""server.log_format: json, the request id and the audit trail, on a live server."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.harness import CLIENT_ID, CLIENT_SECRET


def add(service, tmp_path, name: str, data: bytes) -> str:
    from proxy.catalog.embedded import add_file
    from proxy.config.loading import load_settings

    source = tmp_path / f"upload-{name}"
    source.write_bytes(data)
    return add_file(load_settings(service.config_path), source, name=name, type_=None)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_request_ids_and_the_audit_trail(make_service, tmp_path):
    service = make_service({"server": {"log_format": "json", "audit_log": True}})
    document_id = add(service, tmp_path, "a.txt", b"hello audit")
    base = service.base_url
    refused = httpx.post(
        f"{base}/generate-client-auth-token",
        json={"client_id": CLIENT_ID, "client_secret": "wrong"},
    )
    assert refused.status_code == 403
    token = service.token(group=None, email="jane@example.com")
    auth = {"authorization": f"Bearer {token}"}
    presigned = httpx.post(
        f"{base}/download",
        json={"document_id": document_id},
        headers={**auth, "x-request-id": "p-1"},
    )
    link = presigned.json()["data"]["download_url"]
    assert presigned.headers["x-request-id"] == "p-1"
    through_link = httpx.get(link, headers={"x-request-id": "link.2_x"})
    assert through_link.content == b"hello audit"
    assert through_link.headers["x-request-id"] == "link.2_x"
    ranged = httpx.get(
        f"{base}/download/{document_id}",
        headers={**auth, "range": "bytes=0-4", "x-request-id": "r"},
    )
    assert ranged.status_code == 206
    missing = httpx.get(f"{base}/download/nope", headers={**auth, "x-request-id": "bad id!"})
    assert missing.status_code == 437
    made = missing.headers["x-request-id"]  # a value outside the allowed set is replaced
    assert made != "bad id!" and re.fullmatch(r"[0-9a-f]{32}", made)
    too_long = httpx.get(f"{base}/livez", headers={"x-request-id": "x" * 129})
    assert len(too_long.headers["x-request-id"]) == 32
    service.stop()

    log = service.log()
    lines = json_lines(log)  # every line, uvicorn's included, is one JSON object
    for line in lines:
        assert {"time", "level", "event", "request_id"} <= set(line), line
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {"p-1", "link.2_x", "r", made} <= {line["request_id"] for line in access}
    assert all("?" not in line["path"] for line in access)  # no query: no link signature

    events = [line for line in lines if line["logger"] == "docproxy.audit"]
    by_event = {}
    for event in events:
        by_event.setdefault(event["event"], []).append(event)
    (issued,) = by_event["token.issued"]
    assert issued["client"] == CLIENT_ID and issued["subject"] == "jane@example.com"
    assert re.fullmatch(r"[0-9a-f]{32}", issued["token_id"])
    assert issued["remote"] == "127.0.0.1"
    (refused_event,) = by_event["token.refused"]
    assert refused_event["client"] == CLIENT_ID and refused_event["outcome"] == "refused"
    (presign,) = by_event["presign"]
    assert presign["request_id"] == "p-1" and presign["backend"] == "local"
    assert presign["token_id"] == issued["token_id"] and presign["document"] == document_id
    downloads = {event["request_id"]: event for event in by_event["download"]}
    assert downloads["link.2_x"]["outcome"] == "complete"
    assert downloads["link.2_x"]["bytes_sent"] == 11 and downloads["link.2_x"]["client"] is None
    assert downloads["r"]["range"] == "bytes 0-4/11" and downloads["r"]["bytes_sent"] == 5
    assert downloads["r"]["group"] is None and downloads["r"]["subject"] == "jane@example.com"
    assert downloads["r"]["duration"] >= 0 and downloads["r"]["backend"] == "local"
    assert downloads[made]["outcome"] == "refused 437"
    # Never a secret, a token or a signature.
    assert CLIENT_SECRET not in log and token not in log and "signature" not in log


def test_text_logs_echo_the_request_id_and_write_no_audit_by_default(make_service):
    service = make_service()
    response = httpx.get(f"{service.base_url}/livez", headers={"x-request-id": "abc-1"})
    assert response.headers["x-request-id"] == "abc-1"
    service.token()
    assert "docproxy.audit" not in service.log()
    with pytest.raises(json.JSONDecodeError):
        json_lines(service.log())


def test_text_audit_events_are_key_value_lines_without_credentials(make_service, tmp_path):
    service = make_service({"server": {"audit_log": True}})
    document_id = add(service, tmp_path, "t.txt", b"hello text audit")
    token = service.token(group=None, email="jane@example.com")
    auth = {"authorization": f"Bearer {token}"}
    link = httpx.post(
        f"{service.base_url}/download", json={"document_id": document_id}, headers=auth
    )
    assert httpx.get(link.json()["data"]["download_url"]).content == b"hello text audit"
    downloaded = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert downloaded.content == b"hello text audit"
    service.stop()
    log = service.log()
    events = [line for line in log.splitlines() if " docproxy.audit: " in line]
    assert any(line.split("docproxy.audit: ")[1].startswith("token issued") for line in events)
    downloads = [line for line in events if ": download " in line and "complete" in line]
    assert len(downloads) == 2, events
    assert all(f"document={document_id!r}" in line for line in downloads)
    assert all("bytes_sent=16" in line and "outcome='complete'" in line for line in downloads)
    assert any("subject='jane@example.com'" in line for line in downloads)
    signature = httpx.URL(link.json()["data"]["download_url"]).params["signature"]
    assert CLIENT_SECRET not in log and token not in log and signature not in log


def test_log_format_is_validated_by_name(tmp_path):
    from proxy.config.settings import ConfigError, parse_settings
    from tests.harness import base_config, merge

    with pytest.raises(ConfigError) as raised:
        parse_settings(merge(base_config(tmp_path), {"server": {"log_format": "xml"}}))
    assert "server.log_format: must be one of text, json (got 'xml')" in raised.value.problems
