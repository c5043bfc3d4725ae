"""POST /download and the proxy's own HMAC-signed links for the local store."""

from __future__ import annotations

import sqlite3
import time
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from proxy.auth.links import LinkSigner
from proxy.config.settings import PresignConfig, single_key
from tests.harness import LINK_KEY, assert_envelope, run_cli
from tests.samples import pdf_bytes, sha256

DOCUMENT_ID = "doc-abc-123-def-456"  # the Download Document API's example id


@pytest.fixture(scope="module")
def service(make_module_service, tmp_path_factory):
    service = make_module_service()
    folder = tmp_path_factory.mktemp("docs")
    source = folder / "my-document.pdf"
    source.write_bytes(pdf_bytes(5000))
    run_cli(service.config_path, "documents", "add", str(source), "--id", DOCUMENT_ID)
    other = folder / "other.txt"
    other.write_bytes(b"another document")
    run_cli(service.config_path, "documents", "add", str(other), "--id", "other-doc")
    grouped = folder / "acme.txt"
    grouped.write_bytes(b"for acme only")
    run_cli(
        service.config_path, "documents", "add", str(grouped), "--id", "acme-doc",
        "--group", "acme",
    )  # fmt: skip
    service.document_bytes = source.read_bytes()
    return service


@pytest.fixture(scope="module")
def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


def presign(service, auth, document_id: str = DOCUMENT_ID) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/download",
        headers={**auth, "Content-Type": "application/json"},
        json={"document_id": document_id},
    )


def signer(ttl: int = 3600, key: str = LINK_KEY) -> LinkSigner:
    return LinkSigner(PresignConfig(signing_keys=single_key(key), ttl=ttl))


def test_api_example_1_returns_a_link_that_downloads_without_a_token(service, auth):
    before = int(time.time())
    response = presign(service, auth)
    assert response.status_code == 200
    body = response.json()
    assert body["statusCode"] == 200 and body["message"] == "OKAY"
    assert list(body["data"]) == ["download_url"]
    link = body["data"]["download_url"]
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}" == service.base_url
    assert parts.path == f"/links/{DOCUMENT_ID}"
    query = parse_qs(parts.query)
    assert set(query) == {"expires", "kid", "signature"}
    assert query["kid"] == ["default"]  # the single-key form
    # Valid for one hour by default.
    assert before + 3600 <= int(query["expires"][0]) <= int(time.time()) + 3600

    downloaded = httpx.get(link)
    assert downloaded.status_code == 200
    assert sha256(downloaded.content) == sha256(service.document_bytes)
    assert downloaded.headers["content-type"] == "application/pdf"
    assert downloaded.headers["content-disposition"] == 'attachment; filename="my-document.pdf"'
    assert downloaded.headers["cache-control"] == "no-cache"
    assert downloaded.headers["x-content-type-options"] == "nosniff"
    assert downloaded.headers["content-length"] == str(len(service.document_bytes))


def test_link_works_many_times_until_expiry(service, auth):
    link = presign(service, auth).json()["data"]["download_url"]
    for _ in range(3):
        assert httpx.get(link).content == service.document_bytes


def test_link_is_what_links_signer_makes(service):
    """The link format is the documented one: anyone holding the key can check it offline."""
    link = signer().document_link(service.base_url, DOCUMENT_ID)
    assert httpx.get(link).content == service.document_bytes


def test_expired_link_is_refused(service):
    expired = signer().document_link(service.base_url, DOCUMENT_ID, now=time.time() - 3601)
    assert_envelope(httpx.get(expired), 403, "UNAUTHORIZED")
    long_ago = signer().document_link(service.base_url, DOCUMENT_ID, now=1_000_000_000)
    assert_envelope(httpx.get(long_ago), 403, "UNAUTHORIZED")


def test_link_expires_after_the_configured_ttl(make_service, tmp_path):
    service = make_service({"presign": {"ttl": 1}})
    source = tmp_path / "short.txt"
    source.write_bytes(b"short-lived")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "short")
    auth = {"Authorization": f"Bearer {service.token()}"}
    link = presign(service, auth, "short").json()["data"]["download_url"]
    expires = int(parse_qs(urlsplit(link).query)["expires"][0])
    assert httpx.get(link).content == b"short-lived" or time.time() >= expires
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    assert_envelope(httpx.get(link), 403, "UNAUTHORIZED")


def test_link_signed_with_another_key_is_refused(service):
    forged = signer(key="not-the-configured-link-key").document_link(service.base_url, DOCUMENT_ID)
    response = httpx.get(forged)
    assert_envelope(response, 403, "UNAUTHORIZED")
    assert "www-authenticate" not in response.headers  # a link is no Bearer token


def test_token_key_does_not_sign_links(service):
    from tests.harness import TOKEN_KEY

    forged = signer(key=TOKEN_KEY).document_link(service.base_url, DOCUMENT_ID)
    assert_envelope(httpx.get(forged), 403, "UNAUTHORIZED")


def replace_char(text: str, index: int) -> str:
    """``text`` with one character changed to a different one of the same kind."""
    old = text[index]
    if old.isdigit():
        new = str((int(old) + 1) % 10)
    elif old.isalpha():
        new = "b" if old == "a" else ("A" if old.islower() else "a")
    else:
        new = "x" if old != "x" else "y"
    return text[:index] + new + text[index + 1 :]


def test_every_single_character_change_is_refused(service, auth):
    link = presign(service, auth).json()["data"]["download_url"]
    parts = urlsplit(link)
    query = parse_qs(parts.query)
    document_id, expires, signature = DOCUMENT_ID, query["expires"][0], query["signature"][0]

    def url(doc: str, exp: str, sig: str) -> str:
        query = f"expires={exp}&kid=default&signature={sig}"
        return f"{service.base_url}/links/{quote(doc, safe='')}?{query}"

    assert httpx.get(url(document_id, expires, signature)).status_code == 200
    tampered = (
        [url(replace_char(document_id, i), expires, signature) for i in range(len(document_id))]
        + [url(document_id, replace_char(expires, i), signature) for i in range(len(expires))]
        + [url(document_id, expires, replace_char(signature, i)) for i in range(len(signature))]
    )
    with httpx.Client() as client:
        for candidate in tampered:
            assert_envelope(client.get(candidate), 403, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d, e, s: f"/links/{d}?signature={s}",
        lambda d, e, s: f"/links/{d}?expires={e}",
        lambda d, e, s: f"/links/{d}",
        lambda d, e, s: f"/links/{d}?expires={e}&signature=",
        lambda d, e, s: f"/links/{d}?expires=&signature={s}",
        lambda d, e, s: f"/links/{d}?expires=0{e}&signature={s}",  # same number, other bytes
        lambda d, e, s: f"/links/{d}?expires=+{e}&signature={s}",
        lambda d, e, s: f"/links/{d}?expires={e}.0&signature={s}",
        lambda d, e, s: f"/links/{d}?expires={e}&signature={s}=",
        lambda d, e, s: f"/links/{d}?expires={e}&signature={s[:-1]}",
        lambda d, e, s: f"/links/{d}?expires={e}&signature={s}A",
        lambda d, e, s: f"/links/{d}?expires={e}&signature={s.upper()}",
        lambda d, e, s: f"/links/{d}x?expires={e}&signature={s}",
        lambda d, e, s: f"/links/{d}/?expires={e}&signature={s}",
        lambda d, e, s: f"/links/other-doc?expires={e}&signature={s}",
        lambda d, e, s: f"/links/{d}?expires={int(e) + 86400}&signature={s}",
        lambda d, e, s: f"/links/{d}?expires={quote(non_ascii_digits(e))}&signature={s}",
    ],
    ids=[
        "no-expires", "no-signature", "no-query", "empty-signature", "empty-expires",
        "leading-zero", "plus-sign", "decimal", "padded-signature", "short-signature",
        "long-signature", "case-changed", "other-id", "trailing-slash", "other-document",
        "later-expiry", "arabic-digits",
    ],
)  # fmt: skip
def test_mangled_links_are_refused(service, auth, mangle):
    link = presign(service, auth).json()["data"]["download_url"]
    query = parse_qs(urlsplit(link).query)
    path = mangle(DOCUMENT_ID, query["expires"][0], query["signature"][0])
    path += ("&" if "?" in path else "?") + "kid=default"  # the key id is right, the rest not
    assert_envelope(httpx.get(f"{service.base_url}{path}"), 403, "UNAUTHORIZED")


def non_ascii_digits(number: str) -> str:
    """The same number in Arabic-Indic digits: int() reads it, the signature must not."""
    return "".join(chr(0x0660 + int(c)) for c in number)


def test_link_ignores_an_authorization_header(service, auth):
    """A link stands on its own: a bad token alongside it changes nothing."""
    link = presign(service, auth).json()["data"]["download_url"]
    response = httpx.get(link, headers={"Authorization": "Bearer garbage"})
    assert response.status_code == 200


def test_link_for_a_document_removed_after_signing_answers_437(service, auth, tmp_path):
    source = tmp_path / "gone.txt"
    source.write_bytes(b"soon gone")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "gone-doc")
    link = presign(service, auth, "gone-doc").json()["data"]["download_url"]
    files = service.config_path.parent / "files"
    for stored in files.iterdir():
        if stored.is_file() and stored.read_bytes() == b"soon gone":
            stored.unlink()
    assert_envelope(httpx.get(link), 437, "Document not found")


def test_tenant_rule_applies_when_the_link_is_made(service):
    acme = {"Authorization": f"Bearer {service.token(group='acme')}"}
    other = {"Authorization": f"Bearer {service.token(group='other')}"}
    assert_envelope(presign(service, other, "acme-doc"), 437, "Document not found")
    link = presign(service, acme, "acme-doc").json()["data"]["download_url"]
    assert httpx.get(link).content == b"for acme only"


def test_public_url_is_the_base_of_links(make_service, tmp_path):
    service = make_service({"server": {"public_url": "https://docs.example.com/base/"}})
    source = tmp_path / "p.txt"
    source.write_bytes(b"public")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "p-doc")
    auth = {"Authorization": f"Bearer {service.token()}"}
    link = presign(service, auth, "p-doc").json()["data"]["download_url"]
    assert link.startswith("https://docs.example.com/base/links/p-doc?expires=")
    # Behind that public URL sits this service: the same path and query download here.
    local = service.base_url + link.removeprefix("https://docs.example.com/base")
    assert httpx.get(local).content == b"public"


def test_ids_needing_escapes_round_trip_through_links(service, auth, tmp_path):
    for document_id in ("a/b c", "ünï?&#=%", "x+y"):
        source = tmp_path / "esc.txt"
        source.write_bytes(document_id.encode())
        run_cli(service.config_path, "documents", "add", str(source), "--id", document_id)
        link = presign(service, auth, document_id).json()["data"]["download_url"]
        assert httpx.get(link).content == document_id.encode(), document_id


def link_expiry(response: httpx.Response) -> int:
    return int(parse_qs(urlsplit(response.json()["data"]["download_url"]).query)["expires"][0])


def test_a_fresh_link_is_handed_out_again_within_the_reuse_margin(make_service, tmp_path):
    """Like stores' URLs: the same catalog row within presign.reuse_margin gets the same link
    (no stat, no signing); with a margin of 0 every request signs a new one."""
    reusing = make_service({"presign": {"reuse_margin": 60}})
    signing = make_service({"presign": {"reuse_margin": 0}})
    source = tmp_path / "r.txt"
    source.write_bytes(b"reused")
    run_cli(reusing.config_path, "documents", "add", str(source), "--id", "r-doc")  # one catalog
    tokens = {s: {"Authorization": f"Bearer {s.token()}"} for s in (reusing, signing)}
    first = {s: presign(s, tokens[s], "r-doc") for s in (reusing, signing)}
    time.sleep(1.1)  # a new link now would expire at least a second later
    again = {s: presign(s, tokens[s], "r-doc") for s in (reusing, signing)}
    assert again[reusing].json() == first[reusing].json()
    assert link_expiry(again[signing]) > link_expiry(first[signing])
    assert httpx.get(again[reusing].json()["data"]["download_url"]).content == b"reused"
    # The catalog is still asked every time: a row deleted meanwhile is refused at once.
    with sqlite3.connect(tmp_path / "docproxy.db") as db:
        db.execute("DELETE FROM documents WHERE id = 'r-doc'")
    assert_envelope(presign(reusing, tokens[reusing], "r-doc"), 437, "Document not found")


def test_links_follow_the_host_the_client_named(service, auth):
    """Without server.public_url, a link's base is the request's Host (remembered per Host:
    one Host's base never leaks into another's)."""
    port = urlsplit(service.base_url).port
    for host in ("docs-a.test", f"docs-b.test:{port}", "docs-a.test", "127.0.0.1"):
        response = httpx.post(
            f"{service.base_url}/download",
            headers={**auth, "Host": host},
            json={"document_id": DOCUMENT_ID},
        )
        link = response.json()["data"]["download_url"]
        assert link.startswith(f"http://{host}/links/{DOCUMENT_ID}?expires="), (host, link)
