"""The ``docproxy`` command line: ``documents`` on the embedded catalog, ``serve``'s start-up."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import uuid

import httpx
import pytest

from tests.harness import assert_envelope, base_config, free_port, merge, run_cli, write_config
from tests.samples import insert_document


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "config.yaml", base_config(tmp_path))


def rows(tmp_path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "docproxy.db") as connection:
        found = connection.execute(
            "SELECT id, file_path, document_url, name, type, group_name, size, checksum"
            " FROM documents ORDER BY id"
        ).fetchall()
    connection.close()
    return found


def test_add_copies_the_file_and_prints_a_uuid(config, tmp_path):
    source = tmp_path / "Quarterly Report.pdf"
    source.write_bytes(b"%PDF-1.4\nquarterly\n%%EOF\n")
    result = run_cli(config, "documents", "add", str(source))
    document_id = result.stdout.strip()
    assert str(uuid.UUID(document_id)) == document_id
    [(row_id, file_path, url, name, type_, group, size, checksum)] = rows(tmp_path)
    assert row_id == document_id
    assert url is None and type_ is None and group is None
    assert name == "Quarterly Report.pdf"
    assert size == len(source.read_bytes())
    assert checksum == hashlib.sha256(source.read_bytes()).hexdigest()
    stored = tmp_path / "files" / file_path
    assert stored.read_bytes() == source.read_bytes()
    # The store key is docproxy's own; the display name lives only in the catalog.
    assert "Quarterly" not in file_path and file_path.endswith(".pdf")
    source.unlink()  # a copy, not a reference
    assert stored.exists()


def test_add_with_every_option(config, tmp_path):
    source = tmp_path / "raw.bin"
    source.write_bytes(b"options")
    result = run_cli(
        config, "documents", "add", str(source), "--id", "doc-7", "--name", "Résumé",
        "--type", "PDF", "--group", "acme",
    )  # fmt: skip
    assert result.stdout == "doc-7\n"
    [(row_id, _, _, name, type_, group, _, _)] = rows(tmp_path)
    assert (row_id, name, type_, group) == ("doc-7", "Résumé", "PDF", "acme")


def test_duplicate_id_fails_cleanly_and_leaves_no_stray_file(config, tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"first")
    run_cli(config, "documents", "add", str(source), "--id", "same")
    files_before = sorted(p.name for p in (tmp_path / "files").iterdir())
    source.write_bytes(b"second")
    result = run_cli(config, "documents", "add", str(source), "--id", "same", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == "docproxy: document id 'same' already exists"
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == files_before
    again = run_cli(config, "documents", "add-url", "https://x.test/", "--id", "same", check=False)
    assert again.returncode != 0
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


def test_add_of_a_missing_file_fails_cleanly(config, tmp_path):
    result = run_cli(config, "documents", "add", str(tmp_path / "nope.pdf"), check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == f"docproxy: {tmp_path / 'nope.pdf'}: not a file"
    folder = run_cli(config, "documents", "add", str(tmp_path), check=False)
    assert folder.returncode != 0 and "not a file" in folder.stderr


def test_add_url_and_list(config, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_bytes(b"notes")
    file_id = run_cli(config, "documents", "add", str(source), "--id", "f1", "--group", "g")
    url_id = run_cli(
        config, "documents", "add-url", "https://example.com/a.pdf", "--id", "u1", "--name", "A"
    )
    assert (file_id.stdout, url_id.stdout) == ("f1\n", "u1\n")
    generated = run_cli(config, "documents", "add-url", "https://example.com/b.pdf").stdout
    uuid.UUID(generated.strip())
    listing = run_cli(config, "documents", "list").stdout.splitlines()
    assert listing[0] == "id\tname\ttype\tgroup\tsize\tfile_path\turl"
    by_id = {line.split("\t")[0]: line.split("\t") for line in listing[1:]}
    assert set(by_id) == {"f1", "u1", generated.strip()}
    assert by_id["f1"][1:5] == ["notes.txt", "", "g", "5"]
    assert by_id["f1"][6] == ""
    assert by_id["u1"][1] == "A" and by_id["u1"][5] == ""
    assert by_id["u1"][6] == "https://example.com/a.pdf"


def test_list_of_an_empty_catalog(config):
    assert run_cli(config, "documents", "list").stdout == (
        "id\tname\ttype\tgroup\tsize\tfile_path\turl\n"
    )


def test_show_prints_every_field_of_the_row(config, tmp_path):
    source = tmp_path / "a.pdf"
    source.write_bytes(b"%PDF-1.4\nshow\n")
    run_cli(config, "documents", "add", str(source), "--id", "s1", "--name", "A b.pdf",
            "--type", "PDF", "--group", "acme")  # fmt: skip
    shown = run_cli(config, "documents", "show", "s1").stdout.splitlines()
    fields = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "") for line in shown)
    [(_, file_path, _, _, _, _, size, checksum)] = rows(tmp_path)
    assert list(fields) == [
        "id", "file_path", "document_url", "name", "type", "group_name", "size", "checksum",
        "created_at", "updated_at", "deleted_at",
    ]  # fmt: skip
    assert fields["id"] == "s1" and fields["file_path"] == file_path
    assert (fields["name"], fields["type"], fields["group_name"]) == ("A b.pdf", "PDF", "acme")
    assert fields["size"] == str(size) and fields["checksum"] == checksum
    assert fields["document_url"] == "" and fields["deleted_at"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["created_at"])


@pytest.mark.parametrize("command", ["show", "remove"])
def test_show_and_remove_of_an_unknown_id_fail_cleanly(config, command):
    result = run_cli(config, "documents", command, "nope", check=False)
    assert result.returncode == 1
    assert result.stderr == "docproxy: document id 'nope' not found\n"
    assert result.stdout == ""


def test_remove_deletes_the_row_and_its_file(make_service, tmp_path):
    service = make_service()
    source = tmp_path / "gone.txt"
    source.write_bytes(b"soon gone")
    for document_id in ("gone", "kept"):
        run_cli(service.config_path, "documents", "add", str(source), "--id", document_id)
    files = {row[0]: tmp_path / "files" / row[1] for row in rows(tmp_path)}
    auth = {"Authorization": f"Bearer {service.token()}"}
    assert httpx.get(f"{service.base_url}/download/gone", headers=auth).status_code == 200

    removed = run_cli(service.config_path, "documents", "remove", "gone")
    assert removed.stdout == f"removed gone and its file {files['gone']}\n"
    assert not files["gone"].exists()
    # The running service sees the change at once (no restart, no stale cached row).
    assert_envelope(
        httpx.get(f"{service.base_url}/download/gone", headers=auth), 437, "Document not found"
    )
    kept = run_cli(service.config_path, "documents", "remove", "kept", "--keep-file")
    assert kept.stdout == f"removed kept; its file is kept: {files['kept'].name}\n"
    assert files["kept"].read_bytes() == b"soon gone"
    assert rows(tmp_path) == []
    assert run_cli(service.config_path, "documents", "remove", "kept", check=False).returncode == 1


def test_remove_of_a_url_document_and_of_a_row_whose_file_is_missing(config, tmp_path):
    run_cli(config, "documents", "add-url", "https://x.test/a", "--id", "link")
    assert run_cli(config, "documents", "remove", "link").stdout == "removed link\n"
    source = tmp_path / "b.txt"
    source.write_bytes(b"b")
    run_cli(config, "documents", "add", str(source), "--id", "b")
    [(_, file_path, *_)] = rows(tmp_path)
    (tmp_path / "files" / file_path).unlink()
    assert run_cli(config, "documents", "remove", "b").stdout == "removed b\n"
    assert rows(tmp_path) == []


def test_remove_never_deletes_outside_the_local_store(config, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not docproxy's")
    run_cli(config, "documents", "list")  # creates the catalog
    insert_document(tmp_path / "docproxy.db", "escape", file_path="../outside.txt")
    insert_document(tmp_path / "docproxy.db", "url", file_path=f"file://{outside}")
    result = run_cli(config, "documents", "remove", "escape", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "docproxy: document 'escape': file_path '../outside.txt' is not in the local store;"
        " give --keep-file to remove only the row\n"
    )
    assert outside.read_bytes() == b"not docproxy's"
    assert (
        "is not in the local store"
        in run_cli(config, "documents", "remove", "url", check=False).stderr
    )
    assert [row[0] for row in rows(tmp_path)] == ["escape", "url"]  # nothing removed
    for document_id in ("escape", "url"):
        run_cli(config, "documents", "remove", document_id, "--keep-file")
    assert rows(tmp_path) == [] and outside.exists()


def test_documents_commands_refuse_an_operator_database(tmp_path):
    config = write_config(
        tmp_path / "operator.yaml",
        merge(base_config(tmp_path), {"catalog": {"embedded": False}}),
    )
    source = tmp_path / "a.txt"
    source.write_bytes(b"a")
    commands = (("add", str(source)), ("add-url", "https://x.test/"), ("list",), ("show", "x"),
                ("remove", "x"))  # fmt: skip
    for args in commands:
        result = run_cli(config, "documents", *args, check=False)
        assert result.returncode != 0
        assert "catalog.embedded is false" in result.stderr
        assert "Traceback" not in result.stderr


def test_added_documents_are_served(make_service, tmp_path):
    service = make_service()
    source = tmp_path / "cv"
    source.write_bytes(b"%PDF-1.4\ncv\n%%EOF\n")
    run_cli(
        service.config_path, "documents", "add", str(source), "--id", "cv", "--name", "My CV",
        "--type", "application/pdf", "--group", "hr",
    )  # fmt: skip
    run_cli(service.config_path, "documents", "add-url", "https://x.test/y", "--id", "link")
    hr = {"Authorization": f"Bearer {service.token(group='hr')}"}
    response = httpx.get(f"{service.base_url}/download/cv", headers=hr)
    assert response.status_code == 200
    assert response.content == source.read_bytes()
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="My CV.pdf"'
    response = httpx.get(f"{service.base_url}/download/link", headers=hr)
    assert_envelope(response, 435, "Document has no file path")


# --- serve: the listening address ---------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_port_in_use_says_so_in_one_line(make_service, workers):
    service = make_service()  # holds the port
    result = run_cli(
        service.config_path, "serve", "--port", str(service.port), "--workers", workers,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"docproxy: cannot listen on 127.0.0.1:{service.port}: address already in use\n"
    )
    assert httpx.get(f"{service.base_url}/healthz").status_code == 200  # the other one still runs


def test_serve_on_an_address_not_of_this_machine_says_so(config):
    # 203.0.113.7 (TEST-NET-3) is no address of this machine.
    port = free_port()
    result = run_cli(config, "serve", "--host", "203.0.113.7", "--port", str(port), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"docproxy: cannot listen on 203.0.113.7:{port}: cannot assign requested address\n"
    )


# --- help and messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [(), ("serve",), ("check-config",), ("documents",), ("documents", "add"),
     ("documents", "add-url"), ("documents", "list"), ("documents", "show"),
     ("documents", "remove"), ("fetch",)],
    ids=" ".join,
)  # fmt: skip
def test_help_is_plain_text(config, command):
    result = run_cli(config, *command, "--help")
    assert result.stdout.startswith("usage: docproxy")
    assert "``" not in result.stdout, result.stdout  # no reStructuredText markup
