"""POST /download/zip and its link: many documents streamed as one ZIP (local store)."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from proxy.catalog.embedded import add_file
from proxy.config.loading import load_settings
from proxy.documents.disposition import content_disposition
from tests.harness import assert_envelope, run_cli
from tests.samples import insert_document, pdf_bytes, sha256, txt_bytes

# A cut archive reaches the client as a reset, or as a close short of Content-Length.
CUT = (httpx.RemoteProtocolError, httpx.ReadError)


def add(service, folder: Path, data: bytes, name: str, group: str | None = None) -> str:
    """Copy ``data`` into the local store and register it (as ``documents add`` does)."""
    source = folder / f"upload-{os.urandom(6).hex()}"
    source.write_bytes(data)
    try:
        return add_file(load_settings(service.config_path), source, name=name, group=group)
    finally:
        source.unlink()


def db_path(service) -> Path:
    return Path(load_settings(service.config_path).catalog.url.removeprefix("sqlite:///"))


def zip_link(service, token: str | None, body: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{service.base_url}/download/zip", json=body, headers=headers, timeout=30)


def link_for(service, token: str, document_ids: list[str], filename: str = "bundle.zip") -> str:
    response = zip_link(service, token, {"document_ids": document_ids, "filename": filename})
    assert response.status_code == 200, response.text
    return response.json()["data"]["download_url"]


def unzip_test(data: bytes, tmp_path: Path) -> str:
    """Debian's unzip reads the archive and checks every entry's CRC."""
    path = tmp_path / f"archive-{os.urandom(4).hex()}.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def service(make_module_service):
    return make_module_service()


@pytest.fixture(scope="module")
def token(service) -> str:
    return service.token()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def documents(service, folder) -> dict[str, bytes]:
    """Three documents: a PDF, a text and a 3 MiB one (several chunks)."""
    contents = {
        "report.pdf": pdf_bytes(20_000),
        "notes.txt": txt_bytes(5000),
        "big.bin": os.urandom(3 * 1024 * 1024 + 17),
    }
    return {add(service, folder, data, name): data for name, data in contents.items()}


def test_an_archive_holds_every_document_byte_for_byte(service, token, documents, tmp_path):
    link = link_for(service, token, list(documents))
    assert urlsplit(link).path == "/archives/bundle.zip"
    response = httpx.get(link, timeout=30)  # no token: the link is the authority
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="bundle.zip"'
    assert response.headers["accept-ranges"] == "none"
    # Stored entries: the length is known before the first byte.
    assert int(response.headers["content-length"]) == len(response.content)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == ["report.pdf", "notes.txt", "big.bin"]
        for name, data in zip(names, documents.values(), strict=True):
            assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
            assert sha256(archive.read(name)) == sha256(data)
    listing = unzip_test(response.content, tmp_path)
    assert "No errors detected" in listing


def test_entries_are_dated_with_the_stores_modification_time(service, token, folder):
    document_id = add(service, folder, b"dated", "dated.txt")
    (row,) = sqlite3.connect(db_path(service)).execute(
        "SELECT file_path FROM documents WHERE id = ?", (document_id,)
    )
    stored = Path(load_settings(service.config_path).storage.backends[0].local_root) / row[0]
    when = time.mktime((2019, 6, 15, 12, 30, 20, 0, 0, -1))
    os.utime(stored, (when, when))
    response = httpx.get(link_for(service, token, [document_id]), timeout=30)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        # The central directory's date, and the local header's (what streaming unzippers read).
        expected = time.gmtime(when)[:6]
        assert archive.getinfo("dated.txt").date_time == expected
        header = response.content[10:14]
        dostime = expected[3] << 11 | expected[4] << 5 | expected[5] // 2
        dosdate = (expected[0] - 1980) << 9 | expected[1] << 5 | expected[2]
        assert header == dostime.to_bytes(2, "little") + dosdate.to_bytes(2, "little")


def test_range_is_ignored_on_an_archive(service, token, documents):
    link = link_for(service, token, list(documents))
    whole = httpx.get(link, timeout=30)
    ranged = httpx.get(link, headers={"range": "bytes=0-99"}, timeout=30)
    assert ranged.status_code == 200
    assert "content-range" not in ranged.headers
    assert ranged.content == whole.content  # the same dates, names and order: the same bytes


def test_head_answers_the_length_without_reading(service, token, documents):
    link = link_for(service, token, list(documents))
    before = service.health()["object_reads"]
    head = httpx.head(link, timeout=30)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(httpx.get(link, timeout=30).content)
    assert service.health()["object_reads"] == before + len(documents)  # the GET's only


def test_duplicate_and_hostile_names_are_unique_and_safe(service, token, folder, tmp_path):
    names = [
        "a.pdf",
        "A.pdf",
        "a.pdf",
        "../../etc/passwd",
        "/abs/path.txt",
        "back\\slash.txt",
        "ctrl\x01\x1fchars.txt",
        "résumé 履歴書.txt",
        "..",
        "a (2).pdf",
    ]
    ids = [add(service, folder, f"body {index}".encode(), name) for index, name in enumerate(names)]
    response = httpx.get(link_for(service, token, ids), timeout=30)
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        entries = archive.namelist()
        assert entries[:3] == ["a.pdf", "A (2).pdf", "a (3).pdf"]
        assert len({name.casefold() for name in entries}) == len(entries)
        for entry in entries:
            assert "/" not in entry and "\\" not in entry and entry not in ("", ".", "..")
            assert not any(ord(c) < 32 for c in entry)
        assert "résumé 履歴書.txt" in entries
        for index, entry in enumerate(entries):
            assert archive.read(entry) == f"body {index}".encode()
    unzip_test(response.content, tmp_path)


def test_compressed_archives_are_deflated_and_chunked(make_service, tmp_path):
    service = make_service({"zip": {"compress": True}})
    data = b"the same line again\n" * 50_000
    ids = [add(service, tmp_path, data, f"text-{n}.txt") for n in range(3)]
    response = httpx.get(link_for(service, service.token(), ids), timeout=30)
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert len(response.content) < len(data)
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        for name in archive.namelist():
            assert archive.getinfo(name).compress_type == zipfile.ZIP_DEFLATED
            assert archive.read(name) == data
    unzip_test(response.content, tmp_path)


def test_any_refused_document_refuses_the_archive_naming_the_first(service, token, documents):
    good = next(iter(documents))
    response = zip_link(service, token, {"document_ids": [good, "no-such-1", "no-such-2"]})
    assert response.status_code == 437
    assert response.json() == {
        "statusCode": 437,
        "data": {"document_id": "no-such-1"},
        "message": "Document not found",
    }


def test_each_document_is_checked_as_a_single_download(service, token, documents, folder):
    good = next(iter(documents))
    database = db_path(service)
    insert_document(database, "url-only", url="https://example.com/x.pdf", name="x.pdf")
    insert_document(database, "gone", file_path="missing/object.pdf", name="gone.pdf")
    insert_document(database, "deleted", file_path="x.pdf", deleted_at="2024-01-01T00:00:00Z")
    acme = add(service, folder, b"for acme", "acme.txt", group="acme")
    cases = [
        ("url-only", 435, "Document has no file path"),
        ("gone", 437, "Document not found"),
        ("deleted", 437, "Document not found"),
    ]
    for document_id, status, message in cases:
        response = zip_link(service, token, {"document_ids": [good, document_id]})
        assert response.status_code == status, response.text
        assert response.json() == {
            "statusCode": status,
            "data": {"document_id": document_id},
            "message": message,
        }
    # The tenant rule: another group's document is not found; its own group gets it.
    response = zip_link(service, service.token(group="other"), {"document_ids": [acme]})
    assert response.json()["data"] == {"document_id": acme}
    assert response.status_code == 437
    assert zip_link(service, service.token(group="acme"), {"document_ids": [acme]}).is_success


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "document_ids is required"),
        ({"document_ids": []}, "document_ids is required"),
        ({"document_ids": "abc"}, "document_ids must be a list of document ids"),
        ({"document_ids": ["ok", ""]}, "Document ID is required"),
        ({"document_ids": ["ok", 7]}, "Document ID is required"),
        ({"document_ids": ["ok"], "filename": 3}, "filename must be a string"),
    ],
)
def test_bad_bodies_are_refused_with_435(service, token, body, message):
    assert_envelope(zip_link(service, token, body), 435, message)


def test_a_token_is_required(service, documents):
    assert_envelope(zip_link(service, None, {"document_ids": list(documents)}), 403, "UNAUTHORIZED")
    assert_envelope(zip_link(service, "nonsense", {"document_ids": ["x"]}), 403, "UNAUTHORIZED")


def test_limits_are_refused_with_435_saying_which(make_service, tmp_path):
    service = make_service({"zip": {"max_documents": 2, "max_bytes": "1KiB"}})
    token = service.token()
    small = [add(service, tmp_path, b"x", f"s{n}.txt") for n in range(3)]
    assert_envelope(
        zip_link(service, token, {"document_ids": small}),
        435,
        "Too many documents: 3, more than zip.max_documents (2)",
    )
    big = add(service, tmp_path, b"y" * 2000, "big.txt")
    assert_envelope(
        zip_link(service, token, {"document_ids": [small[0], big]}),
        435,
        "Archive too large: the documents total 2001 bytes, more than zip.max_bytes (1024)",
    )


def long_link_request(service, folder: Path, count: int) -> httpx.Response:
    """An archive of ``count`` ids that do not deflate (random, 60 characters each)."""
    document_id = add(service, folder, b"z", "z.txt")
    ids = [document_id] + [os.urandom(30).hex() for _ in range(count - 1)]
    with sqlite3.connect(db_path(service)) as connection:
        ((path,),) = connection.execute(
            "SELECT file_path FROM documents WHERE id = ?", (document_id,)
        )
        connection.executemany(
            "INSERT INTO documents (id, file_path, name) VALUES (?, ?, 'z.txt')",
            [(other, path) for other in ids[1:]],
        )
    return zip_link(service, service.token(), {"document_ids": ids})


def test_a_link_longer_than_browsers_take_is_refused(make_service, tmp_path):
    service = make_service({"zip": {"max_documents": 5000}, "server": {"max_target_bytes": "1MiB"}})
    response = long_link_request(service, tmp_path, 2000)
    assert response.status_code == 435, response.text[:200]
    assert response.json()["message"].startswith("Archive link would be ")
    assert response.json()["message"].endswith("more than 60000: ask for fewer documents")


def test_a_link_the_server_would_refuse_is_refused(service, folder):
    """The server answers 414 past server.max_target_bytes (8 KiB): no such link is made."""
    response = long_link_request(service, folder, 300)
    assert response.status_code == 435, response.text[:200]
    message = response.json()["message"]
    assert message.endswith("more than server.max_target_bytes (8192): ask for fewer documents")
    fitting = long_link_request(service, folder, 80)
    assert fitting.status_code == 200
    assert len(urlsplit(fitting.json()["data"]["download_url"]).path) < 8192


def tampered(link: str, **changes: str) -> str:
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_link_covers_exactly_its_list_and_name(service, token, documents, folder):
    ids = list(documents)
    link = link_for(service, token, ids[:1])
    other = link_for(service, token, ids)
    # The other link's list under this link's signature, a changed name, a later expiry.
    forged = tampered(link, ids=parse_qs(urlsplit(other).query)["ids"][0])
    renamed = link.replace("/archives/bundle.zip", "/archives/other.zip")
    later = tampered(link, expires=str(int(time.time()) + 999_999))
    for url in (forged, renamed, later, tampered(link, signature="x"), link.split("?")[0]):
        assert_envelope(httpx.get(url, timeout=10), 403, "UNAUTHORIZED")


def test_a_document_deleted_after_the_link_refuses_the_archive(service, token, folder):
    ids = [add(service, folder, b"keep", "keep.txt"), add(service, folder, b"drop", "drop.txt")]
    soft = add(service, folder, b"soft", "soft.txt")
    link = link_for(service, token, ids)
    soft_link = link_for(service, token, [ids[0], soft])
    run_cli(service.config_path, "documents", "remove", ids[1])
    response = httpx.get(link, timeout=10)
    assert response.status_code == 437
    assert response.json()["data"] == {"document_id": ids[1]}
    with sqlite3.connect(db_path(service)) as connection:
        connection.execute("UPDATE documents SET deleted_at = '2025-01-01' WHERE id = ?", (soft,))
    response = httpx.get(soft_link, timeout=10)
    assert response.status_code == 437
    assert response.json()["data"] == {"document_id": soft}


def test_an_object_gone_mid_archive_aborts_it(service, token, folder):
    """The first document is being sent when the second's file goes: the connection is cut,
    the client never gets a valid archive without that file."""
    first = add(service, folder, os.urandom(32 * 1024 * 1024), "first.bin")
    second = add(service, folder, b"second", "second.txt")
    with sqlite3.connect(db_path(service)) as connection:
        ((path,),) = connection.execute("SELECT file_path FROM documents WHERE id = ?", (second,))
    stored = Path(load_settings(service.config_path).storage.backends[0].local_root) / path
    link = link_for(service, token, [first, second])
    received = 0
    with pytest.raises(CUT), httpx.stream("GET", link, timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            if received == 0:
                stored.unlink()
            received += len(chunk)
    assert received < int(r.headers["content-length"])
    assert "aborted by storage" in service.log()
    assert "Traceback" not in service.log()


def test_a_client_that_goes_away_stops_the_reads(service, token, folder):
    big = [add(service, folder, os.urandom(16 * 1024 * 1024), f"part{n}.bin") for n in range(4)]
    link = link_for(service, token, big)
    before = service.health()
    with httpx.stream("GET", link, timeout=30) as response:
        iterator = response.iter_raw()
        next(iterator)
    # The server notices the closed connection and stops reading the stores.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.health()["open_streams"]:
        time.sleep(0.05)
    after = service.health()
    assert after["open_streams"] == 0
    assert after["aborted"] == before["aborted"] + 1
    assert after["bytes_read"] - before["bytes_read"] < 32 * 1024 * 1024


def test_zip_settings_are_validated_naming_the_key(tmp_path):
    from proxy.config.settings import ConfigError, parse_settings
    from tests.harness import base_config, merge

    config = merge(
        base_config(tmp_path),
        {"zip": {"max_documents": 0, "max_bytes": "lots", "compress": "yes", "other": 1}},
    )
    with pytest.raises(ConfigError) as error:
        parse_settings(config)
    problems = "\n".join(error.value.problems)
    assert "zip.max_documents: must be at least 1" in problems
    assert "zip.max_bytes: must be a byte size" in problems
    assert "zip.compress: must be true or false" in problems
    assert "zip.other: unknown key" in problems


def test_an_archive_is_not_the_documents_single_download(service, token, documents):
    """The archive's own link is not a document link, and the reverse."""
    link = link_for(service, token, list(documents))
    assert httpx.get(link.replace("/archives/", "/links/"), timeout=10).status_code == 403


def test_a_revoked_document_refuses_its_archives(service, token, folder):
    from tests.state.shared import eventually

    kept, revoked = (add(service, folder, b"kept", "k.txt"), add(service, folder, b"r", "r.txt"))
    link = link_for(service, token, [kept, revoked])
    run_cli(service.config_path, "revoke", "--document", revoked)
    eventually(lambda: httpx.get(link, timeout=10).status_code == 403)
    assert_envelope(httpx.get(link, timeout=10), 403, "UNAUTHORIZED")
    refused = zip_link(service, token, {"document_ids": [kept, revoked]})
    assert_envelope(refused, 403, "UNAUTHORIZED")
    assert httpx.get(link_for(service, token, [kept]), timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("asked", "saved"),
    [
        ("Rechnungen März", "Rechnungen März.zip"),
        ("../../etc/cron.d/evil.ZIP", "evil.ZIP"),
        ("two\r\nlines.zip", "twolines.zip"),
        ("", "download.zip"),
    ],
)
def test_the_archive_name_is_cleaned_and_survives_the_link(service, token, documents, asked, saved):
    link = link_for(service, token, list(documents)[:1], filename=asked)
    response = httpx.get(link, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == content_disposition(saved)


def test_archive_links_rotate_with_the_presign_keys_on_reload(make_service, tmp_path):
    """SIGHUP with a new first presign key: new archive links are signed with it, and a link
    signed with the old key (still listed) keeps working."""
    import signal

    import yaml

    from tests.state.shared import eventually

    old = {"id": "old", "key": "old-link-key-0123456789abcdef"}
    new = {"id": "new", "key": "new-link-key-0123456789abcdef"}
    service = make_service({"presign": {"signing_key": None, "signing_keys": [old]}})
    token = service.token()
    document_id = add(service, tmp_path, b"rotated bytes", "rotated.txt")
    before = link_for(service, token, [document_id])
    assert parse_qs(urlsplit(before).query)["kid"] == ["old"]
    config = yaml.safe_load(service.config_path.read_text())
    config["presign"]["signing_keys"] = [new, old]
    service.config_path.write_text(yaml.safe_dump(config))
    service.process.send_signal(signal.SIGHUP)
    eventually(
        lambda: parse_qs(urlsplit(link_for(service, token, [document_id])).query)["kid"] == ["new"]
    )
    after = link_for(service, token, [document_id])
    for link in (before, after):
        response = httpx.get(link, timeout=10)
        assert response.status_code == 200, response.text
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.read("rotated.txt") == b"rotated bytes"


def test_a_document_rewritten_mid_archive_aborts_it(service, token, folder):
    """Each entry is read pinned to the version its GET stat'ed: the second document rewritten
    while the first is sent cuts the archive instead of mixing in the new bytes."""
    first = add(service, folder, os.urandom(32 * 1024 * 1024), "first-pinned.bin")
    second = add(service, folder, b"old bytes", "second-pinned.txt")
    with sqlite3.connect(db_path(service)) as connection:
        ((path,),) = connection.execute("SELECT file_path FROM documents WHERE id = ?", (second,))
    stored = Path(load_settings(service.config_path).storage.backends[0].local_root) / path
    link = link_for(service, token, [first, second])
    received = 0
    with pytest.raises(CUT), httpx.stream("GET", link, timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            if received == 0:
                stored.write_bytes(b"new bytes")  # same size, a new version
                os.utime(stored, ns=(1, 1))
            received += len(chunk)
    assert received < int(r.headers["content-length"])
