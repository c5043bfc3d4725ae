"""Logs never carry credentials: the redaction filter on a live server's log, and on records."""

from __future__ import annotations

import io
import logging
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from uvicorn.logging import AccessFormatter

from proxy.runtime.redaction import RedactingFilter, redact
from tests.harness import CLIENT_SECRET, run_cli

SECRETS = {
    "sig": "azure-sas-sig-0001",
    "X-Amz-Signature": "amz0signature0002",
    "X-Goog-Signature": "goog0signature0003",
    "X-Amz-Security-Token": "amz0session0token0004",
    "signature": "own0link0signature0005",
}


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service({"server": {"access_log": True}})
    sample = tmp_path_factory.mktemp("doc") / "doc.txt"
    sample.write_bytes(b"redaction")
    run_cli(service.config_path, "documents", "add", str(sample), "--id", "doc-1")
    return service


def test_the_live_log_carries_no_credential(service):
    token = service.token()
    headers = {"Authorization": f"Bearer {token}"}
    link = httpx.post(
        f"{service.base_url}/download", json={"document_id": "doc-1"}, headers=headers
    ).json()["data"]["download_url"]
    link_signature = parse_qs(urlsplit(link).query)["signature"][0]
    assert httpx.get(link).content == b"redaction"
    # Every kind of signed-link parameter, in the query of requests the access log records.
    query = "&".join(f"{name}={value}" for name, value in SECRETS.items())
    assert httpx.get(f"{service.base_url}/download/doc-1?{query}", headers=headers).is_success
    httpx.get(f"{service.base_url}/links/doc-1?expires=1&{query}")
    httpx.post(f"{service.base_url}/generate-client-auth-token?client_secret={CLIENT_SECRET}")
    httpx.get(f"{service.base_url}/download/{token}", headers=headers)  # a JWT in the path

    log = service.log()
    assert "signature=REDACTED" in log  # the lines are there, their credentials are not
    assert "GET /download/doc-1?" in log
    for secret in [link_signature, token, CLIENT_SECRET, *SECRETS.values()]:
        assert secret not in log, secret


def handled(record_args: tuple, msg: str, *, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redaction")
    logger.propagate = False
    logger.handlers = [handler]
    try:
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception(msg, *record_args)
        else:
            logger.warning(msg, *record_args)
    finally:
        logger.handlers = []
    return stream.getvalue()


@pytest.mark.parametrize(
    ("msg", "args", "secret"),
    [
        ("headers %s", ({"authorization": "Bearer abc.def.ghi-0123"},), "abc.def.ghi-0123"),
        ("Authorization: %s", ("AWS4-HMAC-SHA256 Credential=AK, Signature=s3cr3t",), "s3cr3t"),
        ("password=%s", ("hunter2-hunter2",), "hunter2-hunter2"),
        ("connecting %s", ("AccountName=a;AccountKey=Eby8vdM02xNO==;B=c",), "Eby8vdM02xNO"),
        ("database %s down", ("postgresql://app:pa55word@db/docs",), "pa55word"),
        ("body %s", ('{"client_id": "a", "client_secret": "topsecret9"}',), "topsecret9"),
        ("config %r", ({"signing_key": "key-0123456789abcdef"},), "key-0123456789abcdef"),
    ],
)
def test_records_are_redacted(msg, args, secret):
    line = handled(args, msg)
    assert secret not in line
    assert "REDACTED" in line


def test_exception_text_is_redacted():
    error = RuntimeError("GET https://b.example/c/x?sv=1&sig=sas0sig0secret failed")
    line = handled((), "storage failed", exc=error)
    assert "Traceback" in line and "RuntimeError" in line
    assert "sas0sig0secret" not in line


def test_uvicorn_access_lines_keep_their_fields():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/links/a?expires=1&signature=abc0def", "1.1", 200),
        None,
    )
    RedactingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '127.0.0.1:5000 - "GET /links/a?expires=1&signature=REDACTED HTTP/1.1" 200 OK'


def test_plain_text_is_left_alone():
    text = "download 'a b' complete: 10240 bytes sent; a keyboard, a basic idea, key rotation"
    assert redact(text) == text
