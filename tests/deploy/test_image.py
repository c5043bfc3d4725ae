"""The container image (deploy/Dockerfile), built unchanged on a Debian base made here; its own
command then serves a document to a client holding a token. One build, a few minutes."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.containers import DOCKERFILE, ImageStore, base_images
from tests.harness import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TAG = "docproxy:test"
MAX_SIZE = 250 * 1000**2  # bytes, in the MB podman image ls shows
WRITABLE = ("/var/lib/docproxy", "/tmp")  # the image user's folders (volumes in Kubernetes)
RUNTIME_WRITES = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/run/.containerenv"}
# The variables the image's config reads; it has no defaults for them.
ENVIRONMENT = {
    "DOCPROXY_TOKEN_KEY": secrets.token_hex(32),
    "DOCPROXY_LINK_KEY": secrets.token_hex(32),
    "DOCPROXY_CLIENT_ID": "image-test-client",
    "DOCPROXY_CLIENT_SECRET": secrets.token_urlsafe(24),
}


@dataclass
class BuiltImage:
    store: ImageStore
    config: dict[str, Any]  # the Docker image config: Cmd, User, Env, Healthcheck...
    size: int
    build_seconds: float


@pytest.fixture(scope="module")
def image(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    store = ImageStore()
    try:
        for base in base_images():
            store.import_rootfs(debian_rootfs, base)
        log = tmp_path_factory.mktemp("image") / "build.log"
        seconds = store.build(DOCKERFILE, REPO, TAG, log)
        built = BuiltImage(store, store.inspect(TAG)["Docker"]["config"], store.size(TAG), seconds)
        print(f"\nimage {TAG}: {built.size / 1e6:.0f} MB, built in {seconds:.0f} s")
        yield built
    finally:
        store.destroy()


def test_the_image_is_small_runs_as_a_user_and_has_no_compiler(image):
    assert image.size < MAX_SIZE, f"{image.size / 1e6:.0f} MB"
    user, _, group = image.config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()  # numeric: runAsNonRoot checks
    assert image.config["Cmd"] == ["docproxy", "serve", "--host", "0.0.0.0"]
    assert "DOCPROXY_CONFIG=/etc/docproxy/config.yaml" in image.config["Env"]
    assert "/livez" in " ".join(image.config["Healthcheck"]["Test"])

    container = image.store.container(TAG)
    python = image.store.run(
        container, "sh", "-c", 'readlink -f "$(command -v python3)"; id -u; ls /etc/docproxy'
    )
    assert python.stdout.split() == ["/usr/bin/python3.11", user, "config.yaml"], python.stderr
    compilers = image.store.run(
        container, "sh", "-c", "for c in cc gcc c++ g++ clang rustc; do command -v $c; done; true"
    )
    assert compilers.stdout == "", compilers.stdout
    # Every store's backend and database driver imports (the wheels' stripped libraries
    # load), and libmagic is found.
    imports = image.store.run(
        container,
        "python3",
        "-c",
        "import magic, asyncpg, aiomysql, aiosqlite, uvloop, httptools; "
        "from backends.registry import backend_class, known_protocols; "
        "[backend_class(p) for p in known_protocols()]; "
        "print(magic.from_buffer(b'%PDF-1.4 x', mime=True))",
    )
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip() == "application/pdf"


def test_the_image_does_not_start_without_its_keys(image):
    container = image.store.container(TAG)
    result = image.store.run(container, *image.config["Cmd"], "--port", str(free_port()))
    assert result.returncode == 2, result.stderr
    for variable in ENVIRONMENT:
        assert f"environment variable {variable} is not set" in result.stderr


def test_the_image_serves_a_document_to_a_token(image, tmp_path):
    store = image.store
    container = store.container(TAG)
    body = b"%PDF-1.4\n" + os.urandom(3 * 1024 * 1024)
    (tmp_path / "report.pdf").write_bytes(body)
    store.buildah(
        "copy",
        "--chown",
        image.config["User"],
        container,
        str(tmp_path / "report.pdf"),
        "/var/lib/docproxy/",
    )
    added = store.run(
        container,
        "docproxy",
        "documents",
        "add",
        "/var/lib/docproxy/report.pdf",
        "--id",
        "doc-in-image",
        "--name",
        "Quarterly report.pdf",
        env=ENVIRONMENT,
    )
    assert added.stdout.strip() == "doc-in-image", added.stderr

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    healthcheck = image.config["Healthcheck"]["Test"][1:]  # after "CMD"
    probe_env = {"DOCPROXY_HEALTHCHECK_URL": f"{base}/livez"}
    log = tmp_path / "serve.log"
    store.run(container, "touch", "/tmp/serve-started")
    server = store.start(container, [*image.config["Cmd"], "--port", str(port)], ENVIRONMENT, log)
    try:
        wait_until_healthy(base, server, log)
        assert store.run(container, *healthcheck, env=probe_env).returncode == 0

        token = httpx.post(
            f"{base}/generate-client-auth-token",
            json={
                "client_id": ENVIRONMENT["DOCPROXY_CLIENT_ID"],
                "client_secret": ENVIRONMENT["DOCPROXY_CLIENT_SECRET"],
                "user": {"email": "jane@example.com"},
            },
        ).json()["data"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        response = httpx.get(f"{base}/download/doc-in-image", headers=auth, timeout=30)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()
        assert response.headers["content-type"] == "application/pdf"
        assert response.headers["content-disposition"] == (
            'attachment; filename="Quarterly report.pdf"'
        )
        link = httpx.post(
            f"{base}/download", json={"document_id": "doc-in-image"}, headers=auth
        ).json()["data"]["download_url"]
        assert link.startswith(f"{base}/links/doc-in-image?")
        assert httpx.get(link, timeout=30).content == body
        assert httpx.get(f"{base}/download/doc-in-image").status_code == 403
    finally:
        store.stop(server)
    assert store.run(container, *healthcheck, env=probe_env).returncode != 0  # nothing listens
    # Kubernetes runs it with a read-only root filesystem: docproxy may only have written in
    # the embedded catalog's folder and /tmp. (buildah itself writes the network files on each
    # run, as the kubelet mounts its own.)
    written = set(
        store.run(
            container, "sh", "-c", "find / -xdev -newer /tmp/serve-started 2>/dev/null; true"
        ).stdout.split()
    )
    assert "/etc/hosts" in written  # the search sees the runtime's writes
    outside = {path for path in written - RUNTIME_WRITES if not path.startswith(WRITABLE)}
    assert outside == set()

    output = log.read_text(errors="replace")
    assert "docproxy ready: config /etc/docproxy/config.yaml" in output
    assert "MIME sniffing is off" not in output
    for name in ("DOCPROXY_TOKEN_KEY", "DOCPROXY_LINK_KEY", "DOCPROXY_CLIENT_SECRET"):
        assert ENVIRONMENT[name] not in output


def wait_until_healthy(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the container's docproxy exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"the container's docproxy did not answer in 60 s:\n{log.read_text()}")
