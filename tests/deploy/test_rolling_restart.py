"""A rolling restart loses nothing: while 20 clients download continuously through nginx, each
body checked by SHA-256, one replica is stopped with SIGTERM and started again, then the other
(once the first answers ``/readyz``, as a rollout waits for readiness). Every request completes;
only one running at a SIGTERM may fail, and then visibly (a cut), never as a clean short body."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import require_server
from tests.deploy.balancer import BalancedReplicas, nginx_binary
from tests.harness import Service, base_config, run_cli, write_config

CLIENTS = 20
SIZES = (64 * 1024, 1024 * 1024 + 17, 3 * 1024 * 1024)


def wait_ready(replica: Service, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{replica.base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"replica not ready within {timeout}s:\n{replica.log()}")


def restart(cluster: BalancedReplicas, index: int, signalled: list[float]) -> float:
    """SIGTERM replica ``index``, wait for it to exit, start it and wait until it is ready;
    the seconds it took to exit."""
    replica = cluster.replicas[index]
    assert replica.process is not None
    signalled.append(time.monotonic())
    replica.process.send_signal(signal.SIGTERM)
    replica.process.wait(timeout=60)
    stopped = time.monotonic() - signalled[-1]
    replica.start(timeout=90)
    wait_ready(replica)
    return stopped


def test_a_rolling_restart_loses_no_download(tmp_path: Path):
    binary = nginx_binary()
    if binary is None:
        require_server("nginx", "not installed (apt-get install -y nginx)")
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path))
    documents = {}
    for size in SIZES:
        data = os.urandom(size)
        source = tmp_path / f"doc-{size}.bin"
        source.write_bytes(data)
        document_id = run_cli(config, "documents", "add", str(source)).stdout.strip()
        documents[document_id] = (size, hashlib.sha256(data).digest())

    def download(http: httpx.Client, url: str, document_id: str) -> tuple[str, str]:
        size, digest = documents[document_id]
        try:
            response = http.get(url)
        except httpx.HTTPError as exc:
            return "failed visibly", f"GET {url}: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return f"answered {response.status_code}", f"GET {url}: {response.text[:200]}"
        if hashlib.sha256(response.content).digest() != digest:
            return "clean but wrong", f"GET {url}: {len(response.content)} of {size} bytes"
        return "complete", ""

    def make_link(http: httpx.Client, document_id: str) -> tuple[str, str]:
        try:
            response = http.post("/download", json={"document_id": document_id})
        except httpx.HTTPError as exc:
            return "failed visibly", f"POST /download: {type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return f"answered {response.status_code}", f"POST /download: {response.text[:200]}"
        return "link issued", response.json()["data"]["download_url"]

    cluster = BalancedReplicas(binary, tmp_path, config, {}).start_all()
    outcomes: Counter[str] = Counter()
    # (outcome, started, ended, detail) of every request that did not complete.
    problems: list[tuple[str, float, float, str]] = []
    signalled: list[float] = []
    counting = threading.Lock()
    stop = threading.Event()

    def note(outcome: str, started: float, detail: str) -> None:
        with counting:
            outcomes[outcome] += 1
            if outcome not in ("complete", "link issued"):
                problems.append((outcome, started, time.monotonic(), detail))

    try:
        token = cluster.replicas[0].token()

        def client(number: int) -> None:
            ids = list(documents)
            with httpx.Client(
                base_url=cluster.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                turn = number
                while not stop.is_set():
                    document_id = ids[turn % len(ids)]
                    turn += 1
                    started = time.monotonic()
                    if turn % 2:
                        outcome, detail = download(http, f"/download/{document_id}", document_id)
                    else:
                        # A link from POST /download (a POST, which nginx resends only when told
                        # it may), then the download through it.
                        outcome, detail = make_link(http, document_id)
                        if outcome == "link issued":
                            note(outcome, started, "")
                            started = time.monotonic()
                            outcome, detail = download(http, detail, document_id)
                    note(outcome, started, detail)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        exits = [restart(cluster, 0, signalled)]
        time.sleep(1)
        exits.append(restart(cluster, 1, signalled))
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        stop.set()
        cluster.stop_all()
    logs = "".join(replica.log() for replica in cluster.replicas)
    report = dict(outcomes)
    exited = ", ".join(f"{seconds:.2f}" for seconds in exits)
    print(f"rolling restart, {CLIENTS} clients: {report}; exited {exited} s after SIGTERM")
    assert outcomes["complete"] > CLIENTS and outcomes["link issued"] > CLIENTS, report
    for outcome, started, ended, detail in problems:
        # Only a download running when its replica was told to stop may fail, and only visibly.
        cut = outcome == "failed visibly" and any(started < t < ended for t in signalled)
        assert cut, (report, outcome, detail, [p[3] for p in problems[:5]])
    assert "Traceback" not in logs
