"""docproxy behind a real nginx (X-Accel-Redirect): docproxy authorizes, nginx sends the bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_server
from tests.harness import assert_envelope, free_port, run_cli

NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
        }}
        location /protected/ {{
            internal;
            alias {root}/;
        }}
    }}
}}
"""

ACCEL = {"download": {"accel_redirect": {"enabled": True, "prefix": "/protected/"}}}


@pytest.fixture
def nginx_front(tmp_path: Path):
    """Start nginx in front of a docproxy port; yields a function(upstream_port, root) -> url."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        require_server("nginx", "not installed (apt-get install -y nginx)")
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream: int, root: Path) -> str:
        work = tmp_path / "nginx"
        work.mkdir()
        port = free_port()
        (work / "nginx.conf").write_text(
            NGINX_CONF.format(
                # As root, nginx would read files as "nobody", who cannot enter tmp_path.
                user="user root;\n" if os.geteuid() == 0 else "",
                work=work,
                port=port,
                upstream=upstream,
                root=root,
            )
        )
        log = (work / "nginx.log").open("ab")
        process = subprocess.Popen(
            [binary, "-c", str(work / "nginx.conf"), "-p", str(work), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                return url
            except httpx.TransportError:
                assert process.poll() is None, (work / "nginx.log").read_text()
                time.sleep(0.05)
        raise AssertionError("nginx did not start")

    yield start
    for process in started:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add_document(service, path: Path, **options: str) -> str:
    args = ["documents", "add", str(path)]
    for name, value in options.items():
        args += [f"--{name}", value]
    return run_cli(service.config_path, *args).stdout.strip()


def test_nginx_sends_the_bytes_docproxy_authorized(make_service, nginx_front, tmp_path):
    service = make_service(ACCEL)
    body = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "report.pdf"
    source.write_bytes(body)
    document_id = add_document(service, source, name="Quarterly report.pdf")
    front = nginx_front(service.port, tmp_path / "files")
    auth = {"Authorization": f"Bearer {service.token()}"}

    response = httpx.get(f"{front}/download/{document_id}", headers=auth, timeout=30)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith('attachment; filename="Quarterly')
    assert response.headers["cache-control"] == "no-cache"
    assert "x-accel-redirect" not in response.headers  # nginx consumes it

    # Refusals still come from docproxy, in the API's envelope, through nginx.
    assert_envelope(httpx.get(f"{front}/download/{document_id}"), 403, "UNAUTHORIZED")
    assert_envelope(httpx.get(f"{front}/download/nope", headers=auth), 437, "Document not found")
    # The internal location cannot be fetched directly.
    assert httpx.get(f"{front}/protected/anything").status_code == 404


def test_docproxy_alone_answers_headers_and_no_body(make_service, tmp_path):
    service = make_service(ACCEL)
    source = tmp_path / "a.txt"
    source.write_text("hello")
    document_id = add_document(service, source)
    response = httpx.get(
        f"{service.base_url}/download/{document_id}",
        headers={"Authorization": f"Bearer {service.token()}"},
    )
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-accel-redirect"].startswith("/protected/")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-disposition"] == 'attachment; filename="a.txt"'
    assert response.headers["cache-control"] == "no-cache"


def test_any_key_is_escaped_and_served(make_service, nginx_front, tmp_path):
    """Keys with spaces, '?', '#', '%' and non-ASCII reach nginx's alias as the same file."""
    service = make_service(ACCEL)
    root = tmp_path / "files"
    root.mkdir(exist_ok=True)
    keys = ["dir with space/a?b#c%41.pdf", "ünï cødé/ø 100%.txt", "plain.pdf"]
    database = tmp_path / "docproxy.db"
    for index, key in enumerate(keys):
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f"body {index} {key}".encode())
        with sqlite3.connect(database) as db:
            db.execute(
                "INSERT INTO documents (id, file_path, name) VALUES (?, ?, ?)",
                (f"doc-{index}", key, os.path.basename(key)),
            )
    front = nginx_front(service.port, root)
    auth = {"Authorization": f"Bearer {service.token()}"}
    for index, key in enumerate(keys):
        response = httpx.get(f"{front}/download/doc-{index}", headers=auth, timeout=10)
        assert response.status_code == 200, (key, response.text)
        assert response.content == f"body {index} {key}".encode()


def test_accel_redirect_needs_one_local_backend(tmp_path):
    from proxy.config.settings import ConfigError, parse_settings
    from tests.harness import base_config, merge

    config = merge(base_config(tmp_path), ACCEL)
    config["storage"]["backends"]["second"] = {"protocol": "file", "root": str(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        parse_settings(config)
    assert any("download.accel_redirect.enabled" in p for p in caught.value.problems)
    bad_prefix = merge(base_config(tmp_path), {"download": {"accel_redirect": {"prefix": "x y"}}})
    with pytest.raises(ConfigError) as caught:
        parse_settings(bad_prefix)
    assert any(p.startswith("download.accel_redirect.prefix:") for p in caught.value.problems)
