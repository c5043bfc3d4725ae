"""``docproxy serve --workers N``: several processes share the port and each serves downloads."""

from __future__ import annotations

import hashlib
import os

import httpx
import psutil

from tests.harness import run_cli


def test_two_workers_serve_downloads(make_service, tmp_path):
    service = make_service({"server": {"workers": 2}})
    body = os.urandom(2 * 1024 * 1024 + 5)
    source = tmp_path / "two.pdf"
    source.write_bytes(body)
    document_id = run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()
    token = service.token()

    assert service.process is not None
    children = psutil.Process(service.process.pid).children()
    # uvicorn spawns its workers with multiprocessing (beside it runs a resource tracker).
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2

    # New connections are spread over the workers by the kernel; every one must answer fully.
    digest = hashlib.sha256(body).hexdigest()
    for _ in range(12):
        with httpx.Client(timeout=30) as client:  # a fresh connection each time
            response = client.get(
                f"{service.base_url}/download/{document_id}",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == digest
    presigned = httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["data"]["download_url"]
    assert hashlib.sha256(httpx.get(presigned, timeout=30).content).hexdigest() == digest
