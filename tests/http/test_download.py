"""GET /download/{id}: the bytes, byte for byte, and the headers that go with them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.harness import run_cli
from tests.samples import (
    DOCX_TYPE,
    api_file_types,
    insert_document,
    jpeg_bytes,
    pdf_bytes,
    png_bytes,
    sha256,
    store_file,
    txt_bytes,
)

SAMPLES = api_file_types(padding=3000)


@pytest.fixture(scope="module")
def service(make_module_service):
    return make_module_service()


@pytest.fixture(scope="module")
def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


@pytest.fixture(scope="module")
def samples_added(service, tmp_path_factory) -> dict[str, str]:
    """Each file type of the API added with the CLI; name -> document id."""
    folder = tmp_path_factory.mktemp("samples")
    ids = {}
    for sample in SAMPLES:
        path = folder / sample.name
        path.write_bytes(sample.data)
        ids[sample.name] = run_cli(
            service.config_path, "documents", "add", str(path)
        ).stdout.strip()
    return ids


def workdir(service) -> Path:
    return service.config_path.parent


def add_row(service, document_id: str, data: bytes, *, key: str | None = None, **columns) -> str:
    key = key or f"{document_id}.bin"
    store_file(workdir(service) / "files", key, data)
    return insert_document(workdir(service) / "docproxy.db", document_id, file_path=key, **columns)


def assert_download_headers(response: httpx.Response, content_type: str, filename: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == len(response.content)


def test_api_example_2_direct_download(service, auth, tmp_path):
    source = tmp_path / "my-document.pdf"
    source.write_bytes(pdf_bytes(500))
    run_cli(service.config_path, "documents", "add", str(source), "--id", "doc-abc-123-def-456")
    response = httpx.get(f"{service.base_url}/download/doc-abc-123-def-456", headers=auth)
    assert_download_headers(response, "application/pdf", "my-document.pdf")
    assert sha256(response.content) == sha256(source.read_bytes())


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_each_api_type_downloads_byte_for_byte(service, auth, samples_added, sample):
    document_id = samples_added[sample.name]
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert_download_headers(response, sample.content_type, sample.name)
    assert sha256(response.content) == sha256(sample.data)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_each_api_type_downloads_through_a_presigned_link(service, auth, samples_added, sample):
    document_id = samples_added[sample.name]
    response = httpx.post(
        f"{service.base_url}/download", json={"document_id": document_id}, headers=auth
    )
    assert response.status_code == 200, response.text
    link = response.json()["data"]["download_url"]
    downloaded = httpx.get(link)  # no Authorization header
    assert_download_headers(downloaded, sample.content_type, sample.name)
    assert sha256(downloaded.content) == sha256(sample.data)


def test_multi_chunk_and_edge_sizes(make_service, tmp_path):
    """A tiny chunk size makes every boundary case of the chunked reader show."""
    chunk = 1000
    service = make_service({"storage": {"backends": {"local": {"chunk_size": chunk}}}})
    token = service.token()
    for size in (0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 12_345):
        data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
        data = data[:size]
        source = tmp_path / f"size-{size}.bin"
        source.write_bytes(data)
        document_id = run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()
        response = httpx.get(
            f"{service.base_url}/download/{document_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        assert response.content == data, size


def test_ids_with_slashes_spaces_and_unicode(service, auth):
    for document_id in ("folder/sub/doc", "with space", "ünï-çødé", "a+b=c&d", "x%41y"):
        data = document_id.encode() * 10
        add_row(service, document_id, data, key=f"k-{sha256(data)[:12]}.txt", name="f.txt")
        url = f"{service.base_url}/download/{quote(document_id, safe='/')}"
        response = httpx.get(url, headers=auth)
        assert response.status_code == 200, (document_id, response.text)
        assert response.content == data


# --- Content-Type -----------------------------------------------------------------------------


CONTENT_TYPE_CASES = [
    # (name column, type column, bytes, expected Content-Type, expected filename)
    ("by-extension.pdf", None, pdf_bytes(), "application/pdf", "by-extension.pdf"),
    # Extension alone decides, without sniffing, when the type column is absent.
    ("looks-png.txt", None, png_bytes(), "text/plain", "looks-png.txt"),
    ("by-column", "PDF", pdf_bytes(), "application/pdf", "by-column.pdf"),
    ("by-mime-column", "application/pdf", txt_bytes(), "application/pdf", "by-mime-column.pdf"),
    ("kind-jpg", "jpg", jpeg_bytes(), "image/jpeg", "kind-jpg.jpg"),
    ("kind-jpeg", "JPEG", jpeg_bytes(), "image/jpeg", "kind-jpeg.jpg"),
    ("kind-docx", "docx", b"not really a docx", DOCX_TYPE, "kind-docx.docx"),
    # No extension and no type column: libmagic decides, and the extension is added.
    ("sniffed-png", None, png_bytes(), "image/png", "sniffed-png.png"),
    ("sniffed-pdf", None, pdf_bytes(), "application/pdf", "sniffed-pdf.pdf"),
    ("sniffed-text", None, b"just some words\n" * 20, "text/plain", "sniffed-text.txt"),
    # Extension and column disagree: the first bytes pick the one that is right.
    ("clash.pdf", "image/png", png_bytes(), "image/png", "clash.pdf"),
    ("clash2.png", "application/pdf", pdf_bytes(), "application/pdf", "clash2.png"),
    # ... and when the bytes side with neither, the extension wins.
    ("clash3.txt", "application/pdf", png_bytes(), "text/plain", "clash3.txt"),
    # Nothing known at all: octet-stream, and no made-up extension.
    ("mystery", None, bytes(range(255, -1, -1)) * 8, "application/octet-stream", "mystery"),
    ("empty", None, b"", "application/octet-stream", "empty"),
    # A dot inside a name is not an extension.
    ("John.Doe CV", "pdf", pdf_bytes(), "application/pdf", "John.Doe CV.pdf"),
    ("release v1.2", "pdf", pdf_bytes(), "application/pdf", "release v1.2.pdf"),
    ("UPPER.PDF", None, pdf_bytes(), "application/pdf", "UPPER.PDF"),
]


@pytest.mark.parametrize(
    ("name", "type_", "data", "content_type", "filename"),
    CONTENT_TYPE_CASES,
    ids=[case[0] for case in CONTENT_TYPE_CASES],
)
def test_content_type_resolution(service, auth, name, type_, data, content_type, filename):
    document_id = f"ct-{name}"
    add_row(
        service, document_id, data, key=f"ct-{sha256(name.encode())[:16]}", name=name, type_=type_
    )
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert_download_headers(response, content_type, filename)
    assert response.content == data


@pytest.mark.parametrize(
    "type_",
    ["text/html\r\nX-Injected: 1", "text/html\nX-Injected: 1", "image/png extra", "a/b/c",
     "/", "text/", "<script>"],
)  # fmt: skip
def test_malformed_type_column_is_ignored(service, auth, type_):
    document_id = f"bad-type-{sha256(type_.encode())[:10]}"
    add_row(service, document_id, pdf_bytes(), key=document_id, name="scan", type_=type_)
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    # As if the column were empty: the first bytes decide.
    assert_download_headers(response, "application/pdf", "scan.pdf")
    assert b"x-injected" not in {key.lower() for key, _ in response.headers.raw}


def test_type_column_parameters_are_dropped(service, auth):
    add_row(service, "with-params", b"words\n", key="with-params", name="w",
            type_="Text/Plain; charset=latin-1")  # fmt: skip
    response = httpx.get(f"{service.base_url}/download/with-params", headers=auth)
    assert_download_headers(response, "text/plain", "w.txt")


def test_name_falls_back_to_the_stored_file_name(service, auth):
    add_row(service, "no-name", pdf_bytes(), key="deep/folder/stored.pdf")
    response = httpx.get(f"{service.base_url}/download/no-name", headers=auth)
    assert_download_headers(response, "application/pdf", "stored.pdf")


# --- Content-Disposition ------------------------------------------------------------------------


# The whole header: a quoted ASCII name without quotes or backslashes, then optionally the
# RFC 8187 form made only of attr-chars and percent escapes.
DISPOSITION = re.compile(
    r'attachment; filename="(?P<plain>[^"\\]*)"'
    r"(?:; filename\*=UTF-8''(?P<star>(?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+))?"
)
HOSTILE_NAMES = [
    'quote"in.pdf',
    'two "quoted" words.pdf',
    "back\\slash.pdf",
    "crlf\r\nSet-Cookie: stolen=1.pdf",
    "lf\nX-Injected: 1.pdf",
    "nul\x00byte.pdf",
    "tab\tand\x7fdel.pdf",
    "semi;colon, comma.pdf",
    "résumé.pdf",
    "日本語の文書.pdf",
    "emoji 📄.pdf",
    'mixé "quote" \\ and\r\n.pdf',
    "../../etc/passwd.pdf",
    "%22percent%0d%0a.pdf",
    "x" * 400 + ".pdf",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_hostile_filenames_never_break_the_header(service, auth, name):
    document_id = f"hostile-{sha256(name.encode())[:12]}"
    data = pdf_bytes()
    add_row(service, document_id, data, key=f"{document_id}.pdf", name=name)
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert response.status_code == 200
    assert response.content == data
    raw = [value for key, value in response.headers.raw if key.lower() == b"content-disposition"]
    assert len(raw) == 1
    value = raw[0]
    # Only printable ASCII on the wire, and no header was smuggled in.
    assert all(0x20 <= byte < 0x7F for byte in value), value
    assert b"set-cookie" not in {key.lower() for key, _ in response.headers.raw}
    assert b"x-injected" not in {key.lower() for key, _ in response.headers.raw}
    text = value.decode("ascii")
    match = DISPOSITION.fullmatch(text)
    assert match is not None, text
    plain, star = match.group("plain"), match.group("star")
    # What an RFC 6266 client saves as: filename* when present, else filename.
    saved = unquote(star, errors="strict") if star is not None else plain
    assert "/" not in saved and "\\" not in saved
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in saved)
    assert saved.endswith(".pdf")
    assert len(saved) <= 200
    if name.isascii() and len(name) <= 200 and not any(c in name for c in '"\\\r\n\x00\t\x7f/'):
        assert saved == name and (star is None) == ("%" not in name)
    # A slash is a folder separator: only the last part is the file's name.
    tail = name.split("/")[-1]
    if not tail.isascii():
        assert star is not None
        # The UTF-8 form keeps the letters the ASCII form had to replace.
        assert all(ch in saved for ch in tail if ch.isalnum())


def test_non_ascii_name_gets_both_forms(service, auth):
    add_row(service, "nonascii", pdf_bytes(), key="nonascii.pdf", name="Prüfbericht 2024.pdf")
    response = httpx.get(f"{service.base_url}/download/nonascii", headers=auth)
    assert response.headers["content-disposition"] == (
        'attachment; filename="Prufbericht 2024.pdf"; '
        "filename*=UTF-8''Pr%C3%BCfbericht%202024.pdf"
    )


def test_quotes_are_replaced_in_the_plain_form_and_kept_in_the_utf8_form(service, auth):
    add_row(service, "quoted", pdf_bytes(), key="quoted.pdf", name='say "hi".pdf')
    response = httpx.get(f"{service.base_url}/download/quoted", headers=auth)
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"say _hi_.pdf\"; filename*=UTF-8''say%20%22hi%22.pdf"
    )


# A backslash is a folder separator on Windows, so no saved name may hold one: it becomes "_"
# in both forms, and the rest of the name is kept (it is not cut as if it were a path).
@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        ("back\\slash.pdf", 'attachment; filename="back_slash.pdf"'),
        (
            'He said "hi"\\.pdf',
            'attachment; filename="He said _hi__.pdf"; '
            "filename*=UTF-8''He%20said%20%22hi%22_.pdf",
        ),
        ("..\\..\\secret.pdf", 'attachment; filename="_.._secret.pdf"'),
    ],
    ids=["backslash", "quotes-and-backslash", "dotted"],
)
def test_a_backslash_in_a_name_becomes_an_underscore(service, auth, name, disposition):
    document_id = f"backslash-{sha256(name.encode())[:12]}"
    add_row(service, document_id, pdf_bytes(), key=f"{document_id}.pdf", name=name)
    response = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == disposition


def test_a_percent_sequence_in_a_name_gets_the_exact_utf8_form(service, auth):
    # Browsers percent-decode a plain filename= (RFC 6266 appendix D): Chromium would save
    # "percent %41.pdf" as "percent A.pdf". filename* is taken before it and cannot be misread.
    add_row(service, "percent", pdf_bytes(), key="percent.pdf", name="percent %41.pdf")
    response = httpx.get(f"{service.base_url}/download/percent", headers=auth)
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"percent %41.pdf\"; filename*=UTF-8''percent%20%2541.pdf"
    )


def test_without_libmagic_the_start_warns_once_and_sniffing_is_off(make_service, tmp_path):
    # An unloadable libmagic.so.1 first on the loader's path: python-magic cannot load the
    # library, as on a machine without Debian's libmagic1.
    broken = tmp_path / "broken-lib"
    broken.mkdir()
    (broken / "libmagic.so.1").write_bytes(b"")
    service = make_service(env={"LD_LIBRARY_PATH": str(broken)})
    add_row(service, "unsniffed", png_bytes(), key="unsniffed")
    auth = {"Authorization": f"Bearer {service.token()}"}
    for _ in range(2):
        response = httpx.get(f"{service.base_url}/download/unsniffed", headers=auth)
        assert response.headers["content-type"] == "application/octet-stream"
    warnings = [line for line in service.log().splitlines() if "WARNING" in line]
    assert len(warnings) == 1, service.log()
    assert "libmagic cannot be loaded" in warnings[0] and "libmagic1" in warnings[0]
    assert "Traceback" not in service.log()


def test_with_libmagic_the_start_does_not_warn(make_service):
    service = make_service()
    assert "WARNING" not in service.log() and "libmagic cannot" not in service.log()
