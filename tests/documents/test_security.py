"""Paths that try to leave the root, the tenant rule, and secrets that must never show."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.harness import (
    CLIENT_SECRET,
    LINK_KEY,
    TOKEN_KEY,
    assert_envelope,
    run_cli,
    write_config,
)
from tests.samples import insert_document

SECRET_BYTES = b"outside the root: must never be served"


@pytest.fixture(scope="module")
def service(make_module_service):
    service = make_module_service()
    workdir = service.config_path.parent
    files = workdir / "files"
    # A file next to the root (its parent) and one inside a sibling folder.
    (workdir / "secret.txt").write_bytes(SECRET_BYTES)
    (workdir / "files-sibling").mkdir()
    (workdir / "files-sibling" / "secret.txt").write_bytes(SECRET_BYTES)
    (files / "inside.txt").write_bytes(b"inside")
    (files / "sub").mkdir()
    (files / "sub" / "nested.txt").write_bytes(b"nested")
    os.symlink(workdir / "secret.txt", files / "link-out.txt")
    os.symlink(workdir, files / "dir-link-out")
    os.symlink("../secret.txt", files / "relative-link-out.txt")
    os.symlink("inside.txt", files / "link-in.txt")
    os.symlink("sub", files / "dir-link-in")
    db = workdir / "docproxy.db"
    for document_id, path in TRAVERSALS.items():
        insert_document(db, document_id, file_path=path, name="x.txt")
    for document_id, path in ALLOWED.items():
        insert_document(db, document_id, file_path=path, name="x.txt")
    return service


@pytest.fixture(scope="module")
def auth(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.token()}"}


def traversals(workdir_placeholder: str = "WORKDIR") -> dict[str, str]:
    return {
        "parent": "../secret.txt",
        "parent-deep": "../../../../../../etc/passwd",
        "parent-in-middle": "sub/../../secret.txt",
        "dot-then-parent": "./../secret.txt",
        "absolute": "/etc/passwd",
        "absolute-into-root": f"{workdir_placeholder}/files/inside.txt",
        "double-slash": "//etc/passwd",
        "backslash-parent": "..\\secret.txt",
        "nul-byte": "inside.txt\x00.pdf",
        "symlink-file-out": "link-out.txt",
        "symlink-relative-out": "relative-link-out.txt",
        "symlink-dir-out": "dir-link-out/secret.txt",
        "sibling-prefix": "../files-sibling/secret.txt",
        "file-url-outside": "file:///etc/passwd",
        "file-url-parent": f"file://{workdir_placeholder}/files/../secret.txt",
        "file-url-other-host": "file://evil.example.com/etc/passwd",
        "unknown-scheme": "s3://bucket/secret.txt",
        "just-dot": ".",
        "just-dotdot": "..",
    }


TRAVERSALS = traversals()
ALLOWED = {
    "plain": "inside.txt",
    "nested": "sub/nested.txt",
    "symlink-in": "link-in.txt",
    "symlink-dir-in": "dir-link-in/nested.txt",
    "redundant-dots": "./sub//nested.txt",
}


@pytest.fixture(scope="module", autouse=True)
def absolute_paths(service):
    """Rows naming the real workdir (only known once the module's service exists)."""
    workdir = str(service.config_path.parent)
    db = service.config_path.parent / "docproxy.db"
    import sqlite3

    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE documents SET file_path = replace(file_path, 'WORKDIR', ?)", (workdir,)
        )
    connection.close()


@pytest.mark.parametrize("document_id", list(TRAVERSALS))
def test_paths_out_of_the_root_answer_437_and_are_logged(service, auth, document_id):
    got = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert_envelope(got, 437, "Document not found")
    posted = httpx.post(
        f"{service.base_url}/download", headers=auth, json={"document_id": document_id}
    )
    assert_envelope(posted, 437, "Document not found")
    assert SECRET_BYTES not in got.content
    assert f"document {document_id!r} has a refused file path" in service.log()


@pytest.mark.parametrize("document_id", list(ALLOWED))
def test_paths_inside_the_root_are_served(service, auth, document_id):
    got = httpx.get(f"{service.base_url}/download/{document_id}", headers=auth)
    assert got.status_code == 200, got.text
    assert got.content in (b"inside", b"nested")


def test_file_url_inside_the_root_is_served(service, auth):
    db = service.config_path.parent / "docproxy.db"
    url = f"file://{service.config_path.parent}/files/sub/nested.txt"
    insert_document(db, "file-url-inside", file_path=url, name="n.txt")
    got = httpx.get(f"{service.base_url}/download/file-url-inside", headers=auth)
    assert got.status_code == 200
    assert got.content == b"nested"


def test_symlink_swapped_after_registration_is_refused(service, auth):
    """The check happens on every request, not once when the row was written."""
    files = service.config_path.parent / "files"
    os.symlink("inside.txt", files / "swapped.txt")
    db = service.config_path.parent / "docproxy.db"
    insert_document(db, "swapped", file_path="swapped.txt", name="s.txt")
    assert httpx.get(f"{service.base_url}/download/swapped", headers=auth).content == b"inside"
    os.unlink(files / "swapped.txt")
    os.symlink(service.config_path.parent / "secret.txt", files / "swapped.txt")
    got = httpx.get(f"{service.base_url}/download/swapped", headers=auth)
    assert_envelope(got, 437, "Document not found")


# --- the tenant rule ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grouped(service, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("grouped")
    (folder / "acme.txt").write_bytes(b"acme's document")
    (folder / "shared.txt").write_bytes(b"everyone's document")
    config = service.config_path
    run_cli(config, "documents", "add", str(folder / "acme.txt"), "--id", "acme", "--group",
            "acme")  # fmt: skip
    run_cli(config, "documents", "add", str(folder / "shared.txt"), "--id", "shared")


def tenant_get(service, document_id: str, group: str | None) -> httpx.Response:
    token = service.token(group=group)
    return httpx.get(
        f"{service.base_url}/download/{document_id}",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_same_group_gets_the_document(service, grouped):
    response = tenant_get(service, "acme", "acme")
    assert response.status_code == 200
    assert response.content == b"acme's document"


@pytest.mark.parametrize("group", ["globex", None, "", "ACME", "acme "], ids=repr)
def test_other_or_no_group_gets_437(service, grouped, group):
    assert_envelope(tenant_get(service, "acme", group), 437, "Document not found")
    token = service.token(group=group)
    posted = httpx.post(
        f"{service.base_url}/download",
        headers={"Authorization": f"Bearer {token}"},
        json={"document_id": "acme"},
    )
    assert_envelope(posted, 437, "Document not found")


def test_refusal_looks_exactly_like_an_unknown_id(service, grouped):
    refused = tenant_get(service, "acme", "globex")
    unknown = tenant_get(service, "no-such-id", "globex")
    assert refused.status_code == unknown.status_code == 437
    assert refused.content == unknown.content
    assert "refused to client" in service.log()


@pytest.mark.parametrize("group", ["acme", "globex", None])
def test_document_without_group_is_for_everyone(service, grouped, group):
    assert tenant_get(service, "shared", group).content == b"everyone's document"


def test_tenant_rule_off(make_service, tmp_path):
    service = make_service({"catalog": {"tenant_rule": "off"}})
    source = tmp_path / "acme.txt"
    source.write_bytes(b"acme's document")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "acme", "--group", "acme")
    for group in ("acme", "globex", None):
        assert tenant_get(service, "acme", group).status_code == 200


# --- secrets -----------------------------------------------------------------------------------


def test_keys_and_secrets_never_appear_in_logs_or_responses(make_service, tmp_path):
    service = make_service({"server": {"log_level": "debug"}})
    source = tmp_path / "doc.pdf"
    source.write_bytes(b"%PDF-1.4\n%%EOF\n")
    run_cli(service.config_path, "documents", "add", str(source), "--id", "doc")
    base = service.base_url
    responses = [
        httpx.post(f"{base}/generate-client-auth-token",
                   json={"client_id": "test-client", "client_secret": CLIENT_SECRET}),
        httpx.post(f"{base}/generate-client-auth-token",
                   json={"client_id": "test-client", "client_secret": CLIENT_SECRET + "x"}),
        httpx.post(f"{base}/generate-client-auth-token",
                   json={"client_id": "nobody", "client_secret": CLIENT_SECRET}),
        httpx.post(f"{base}/generate-client-auth-token",
                   content=b'{"client_secret": "' + CLIENT_SECRET.encode() + b'", ',
                   headers={"Content-Type": "application/json"}),
    ]  # fmt: skip
    auth = {"Authorization": f"Bearer {service.token()}"}
    link = httpx.post(f"{base}/download", headers=auth, json={"document_id": "doc"})
    responses += [
        link,
        httpx.get(link.json()["data"]["download_url"]),
        httpx.get(link.json()["data"]["download_url"] + "x"),
        httpx.get(f"{base}/download/doc", headers=auth),
        httpx.get(f"{base}/download/doc", headers={"Authorization": f"Bearer {TOKEN_KEY}"}),
        httpx.get(f"{base}/download/nope", headers=auth),
        httpx.get(f"{base}/healthz"),
    ]
    service.stop()
    log = service.log()
    assert "download 'doc' complete" in log and "POST /generate-client-auth-token" in log
    for secret in (TOKEN_KEY, LINK_KEY, CLIENT_SECRET):
        assert secret not in log, secret
        for response in responses:
            assert secret not in response.text
            assert all(secret not in value for value in response.headers.values())


def test_check_config_does_not_print_secrets(tmp_path):
    from tests.harness import base_config, merge

    config = merge(
        base_config(tmp_path),
        {"auth": {"signing_key": "too-short", "issuer": 5}, "presign": {"ttl": "soon"}},
    )
    path = write_config(tmp_path / "bad.yaml", config)
    result = run_cli(path, "check-config", check=False)
    assert result.returncode != 0
    assert "auth.signing_key: must be at least 16 bytes long" in result.stderr
    assert "too-short" not in result.stderr + result.stdout
    assert LINK_KEY not in result.stderr + result.stdout
    assert CLIENT_SECRET not in result.stderr + result.stdout
