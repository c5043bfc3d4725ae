"""disposition=inline: shown in the browser for download.inline_types, else attachment."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from proxy.config.settings import ConfigError, parse_settings
from tests.harness import assert_envelope, base_config, merge, run_cli
from tests.samples import pdf_bytes

INLINE_PDF = 'inline; filename="report.pdf"'


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service()
    folder = tmp_path_factory.mktemp("inline")
    (folder / "report.pdf").write_bytes(pdf_bytes(3000))
    (folder / "page.html").write_bytes(b"<script>alert(1)</script>")
    run_cli(service.config_path, "documents", "add", str(folder / "report.pdf"), "--id", "pdf")
    run_cli(service.config_path, "documents", "add", str(folder / "page.html"), "--id", "html")
    service.auth = {"Authorization": f"Bearer {service.token()}"}
    return service


def get(service, document_id: str, **query: str) -> httpx.Response:
    return httpx.get(
        f"{service.base_url}/download/{document_id}", params=query, headers=service.auth
    )


def presign(service, body: dict) -> httpx.Response:
    return httpx.post(f"{service.base_url}/download", json=body, headers=service.auth)


def test_get_serves_inline_only_when_asked_and_allowed(service):
    assert get(service, "pdf").headers["content-disposition"].startswith("attachment;")
    assert (
        get(service, "pdf", disposition="attachment")
        .headers["content-disposition"]
        .startswith("attachment;")
    )
    assert get(service, "pdf", disposition="inline").headers["content-disposition"] == INLINE_PDF
    # HTML is not among the inline types: a browser would run it on docproxy's origin.
    html = get(service, "html", disposition="inline")
    assert html.status_code == 200
    assert html.headers["content-disposition"].startswith("attachment;")


def test_a_link_carries_the_disposition_under_its_signature(service):
    link = presign(service, {"document_id": "pdf", "disposition": "inline"})
    url = link.json()["data"]["download_url"]
    assert parse_qs(urlsplit(url).query)["disposition"] == ["inline"]
    assert httpx.get(url).headers["content-disposition"] == INLINE_PDF
    # Dropping or changing it breaks the signature; a plain link stays attachment.
    assert_envelope(httpx.get(url.replace("disposition=inline&", "")), 403, "UNAUTHORIZED")
    plain = presign(service, {"document_id": "pdf"}).json()["data"]["download_url"]
    assert "disposition" not in plain
    assert httpx.get(plain).headers["content-disposition"].startswith("attachment;")
    assert_envelope(httpx.get(plain + "&disposition=inline"), 403, "UNAUTHORIZED")
    limited = presign(service, {"document_id": "pdf", "disposition": "inline", "expires_in": 60})
    assert (
        httpx.get(limited.json()["data"]["download_url"]).headers["content-disposition"]
        == INLINE_PDF
    )


@pytest.mark.parametrize("value", ["INLINE", "", "open", 1, None, ["inline"]])
def test_bad_dispositions_are_435_naming_the_field(service, value):
    message = "disposition must be one of attachment, inline"
    if value is not None:
        assert_envelope(
            presign(service, {"document_id": "pdf", "disposition": value}), 435, message
        )
    if isinstance(value, str):
        assert_envelope(get(service, "pdf", disposition=value), 435, message)


def test_inline_types_are_configured_and_checked(tmp_path):
    settings = parse_settings(base_config(tmp_path))
    assert "application/pdf" in settings.download.inline_types
    own = merge(base_config(tmp_path), {"download": {"inline_types": ["text/plain"]}})
    assert parse_settings(own).download.inline_types == ("text/plain",)
    bad = merge(base_config(tmp_path), {"download": {"inline_types": ["PDF", 3]}})
    with pytest.raises(ConfigError) as raised:
        parse_settings(bad)
    assert raised.value.problems == [
        "download.inline_types[0]: must be a lower-case MIME type, not 'PDF'",
        "download.inline_types[1]: must be a lower-case MIME type, not 3",
    ]
