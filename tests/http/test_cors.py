"""Calls from web pages of other origins (cors.*): preflights read with httpx from a live
server, then a real browser (Debian's chromium, driven by selenium) on a page of another origin
that downloads through the API and saves the file."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from proxy.config.settings import ConfigError, parse_settings
from tests.conftest import require_server
from tests.harness import assert_envelope, base_config, merge, run_cli

ASCII_NAME = "quarterly-report.pdf"
UNICODE_NAME = "Übersicht März (Entwurf).txt"
PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 40
TEXT_BYTES = "Grüße aus dem Bericht\n".encode() * 100


class Page(ThreadingHTTPServer):
    """A web page on its own origin (a port of 127.0.0.1), served by the test."""

    def __init__(self, html: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


# The page takes the API's address, a token and a document id from its query string; it reads
# the document straight (GET with Authorization and Range), asks for a link (POST /download)
# and follows it; window.result says what it saw, or the error fetch raised.
PAGE = b"""<!doctype html><meta charset="utf-8"><title>app</title><script>
(async () => {
  const q = new URLSearchParams(location.search), api = q.get("api");
  const auth = {Authorization: "Bearer " + q.get("token")};
  const out = {};
  try {
    const direct = await fetch(api + "/download/" + encodeURIComponent(q.get("doc")),
                               {headers: {...auth, Range: "bytes=0-9"}});
    out.direct = {status: direct.status, disposition: direct.headers.get("content-disposition"),
                  range: direct.headers.get("content-range"),
                  bytes: (await direct.arrayBuffer()).byteLength};
    const answer = await fetch(api + "/download", {method: "POST",
        headers: {...auth, "Content-Type": "application/json"},
        body: JSON.stringify({document_id: q.get("doc")})});
    out.presign = answer.status;
    const link = document.createElement("a");
    link.href = (await answer.json()).data.download_url;
    document.body.appendChild(link);
    link.click();
  } catch (error) {
    out.error = String(error);
  }
  window.result = out;
})();
</script>"""


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[Page, Page]]:
    """Two origins: the first is listed in cors.allow_origins, the second is not."""
    listed, unlisted = Page(PAGE), Page(PAGE)
    yield listed, unlisted
    for page in (listed, unlisted):
        page.shutdown()
        page.server_close()


@pytest.fixture(scope="module")
def service(make_module_service, pages, tmp_path_factory):
    listed, _ = pages
    service = make_module_service({"cors": {"allow_origins": [listed.origin], "max_age": 120}})
    folder = tmp_path_factory.mktemp("cors-documents")
    for name, data, document_id in (
        (ASCII_NAME, PDF_BYTES, "doc-ascii"),
        (UNICODE_NAME, TEXT_BYTES, "doc-unicode"),
    ):
        (folder / document_id).write_bytes(data)
        run_cli(
            service.config_path,
            "documents", "add", str(folder / document_id), "--id", document_id, "--name", name,
        )  # fmt: skip
    return service


def preflight(service, origin: str, method: str, path: str, headers: str) -> httpx.Response:
    return httpx.options(
        f"{service.base_url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


# --- preflights, read with httpx -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/download", "authorization,content-type"),
        ("GET", "/download/doc-ascii", "authorization,range"),
    ],
)
def test_a_listed_origin_passes_the_preflight(service, pages, method, path, headers):
    listed, _ = pages
    response = preflight(service, listed.origin, method, path, headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == listed.origin
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {
        "GET",
        "HEAD",
        "POST",
    }
    allowed = {h.lower() for h in response.headers["access-control-allow-headers"].split(", ")}
    assert {"authorization", "content-type", "range"} <= allowed
    assert response.headers["access-control-max-age"] == "120"


@pytest.mark.parametrize(
    ("origin", "method", "headers", "message"),
    [
        ("http://elsewhere.example", "POST", "authorization", "Disallowed CORS origin"),
        (None, "DELETE", "authorization", "Disallowed CORS method"),
        (None, "POST", "authorization,x-other", "Disallowed CORS headers"),
    ],
    ids=["origin", "method", "header"],
)
def test_a_refused_preflight_is_a_400_envelope(service, pages, origin, method, headers, message):
    listed, _ = pages
    response = preflight(service, origin or listed.origin, method, "/download", headers)
    assert_envelope(response, 400, message)
    if origin is not None:
        assert "access-control-allow-origin" not in response.headers


def test_the_unlisted_test_page_fails_the_preflight(service, pages):
    _, unlisted = pages
    response = preflight(service, unlisted.origin, "POST", "/download", "authorization")
    assert_envelope(response, 400, "Disallowed CORS origin")


def test_a_download_exposes_its_name_to_scripts(service, pages):
    listed, _ = pages
    response = httpx.get(
        f"{service.base_url}/download/doc-ascii",
        headers={"Origin": listed.origin, "Authorization": f"Bearer {service.token()}"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == listed.origin
    exposed = {h.lower() for h in response.headers["access-control-expose-headers"].split(", ")}
    assert {"content-disposition", "content-length", "content-range", "x-request-id"} <= exposed


def test_without_listed_origins_there_is_no_cors(make_service):
    service = make_service()
    response = preflight(service, "http://127.0.0.1:1", "POST", "/download", "authorization")
    assert_envelope(response, 405, "Method not allowed")
    assert "access-control-allow-origin" not in response.headers


# --- the config ------------------------------------------------------------------------------


def test_the_defaults_allow_get_head_post_with_the_api_headers(tmp_path):
    cors = parse_settings(base_config(tmp_path)).cors
    assert cors.allow_origins == ()
    assert cors.allow_methods == ("GET", "HEAD", "POST")
    assert cors.allow_headers == ("Authorization", "Content-Type", "Range")


@pytest.mark.parametrize(
    ("cors", "problem"),
    [
        ({"allow_origins": ["https://app.example.com/"]}, "cors.allow_origins[0]: must be an"),
        ({"allow_origins": ["app.example.com"]}, "cors.allow_origins[0]: must be an origin"),
        ({"allow_origins": "https://a.example"}, "cors.allow_origins: must be a list"),
        ({"allow_methods": ["GET", "PUT"]}, "cors.allow_methods[1]: must be one of"),
        ({"allow_headers": ["X Bad"]}, "cors.allow_headers[0]: must be a header name"),
        ({"allow_headers": [7]}, "cors.allow_headers[0]: must be a string"),
        ({"max_age": -1}, "cors.max_age: must be"),
        ({"origins": []}, "cors.origins: unknown key"),
    ],
)
def test_cors_keys_are_checked(tmp_path, cors, problem):
    with pytest.raises(ConfigError) as caught:
        parse_settings(merge(base_config(tmp_path), {"cors": cors}))
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


# --- a real browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        require_server("chromium", "install Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    downloads = tmp_path_factory.mktemp("browser-downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=chromedriver))
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def run_page(browser, page: Page, service, document_id: str) -> dict:
    query = urlencode({"api": service.base_url, "token": service.token(), "doc": document_id})
    browser.get(f"{page.origin}/?{query}")
    deadline = time.monotonic() + 30
    while (result := browser.execute_script("return window.result")) is None:
        assert time.monotonic() < deadline, "the page did not finish within 30 s"
        time.sleep(0.1)
    return result


def saved_file(folder: Path, name: str, timeout: float = 30) -> Path:
    """The file the browser saved as ``name``, once complete (no .crdownload left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / name).exists() and not list(folder.glob("*.crdownload")):
            return folder / name
        time.sleep(0.1)
    raise AssertionError(f"no {name!r} saved; the folder holds {sorted(folder.iterdir())}")


@pytest.mark.parametrize(
    ("document_id", "name", "data"),
    [("doc-ascii", ASCII_NAME, PDF_BYTES), ("doc-unicode", UNICODE_NAME, TEXT_BYTES)],
    ids=["ascii-name", "non-ascii-name"],
)
def test_a_page_of_a_listed_origin_downloads_and_saves(
    browser, pages, service, document_id, name, data
):
    listed, _ = pages
    result = run_page(browser, listed, service, document_id)
    assert "error" not in result, result
    # The direct read: a range, whose Content-Disposition and Content-Range the script reads.
    assert result["direct"]["status"] == 206
    assert result["direct"]["bytes"] == 10
    assert result["direct"]["range"] == f"bytes 0-9/{len(data)}"
    assert quote(name) in result["direct"]["disposition"] or name in result["direct"]["disposition"]
    assert result["presign"] == 200
    # The link it followed: the browser saved the whole file under the document's name.
    assert saved_file(browser.downloads, name).read_bytes() == data


def test_a_page_of_another_origin_is_refused_by_the_browser(browser, pages, service):
    _, unlisted = pages
    result = run_page(browser, unlisted, service, "doc-ascii")
    assert result == {"error": "TypeError: Failed to fetch"}
