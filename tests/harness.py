"""Real servers for the tests: docproxy under uvicorn in its own process, on a free port."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent

TOKEN_KEY = "test-token-key-0123456789abcdef"
LINK_KEY = "test-link-key-0123456789abcdef"
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_config(workdir: Path) -> dict[str, Any]:
    """The embedded default (SQLite + local folder) under ``workdir``, with test keys."""
    return {
        "server": {"host": "127.0.0.1", "port": 0, "log_level": "info"},
        "auth": {
            "signing_key": TOKEN_KEY,
            "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
        },
        "presign": {"signing_key": LINK_KEY, "ttl": 3600},
        "catalog": {"url": f"sqlite:///{workdir}/docproxy.db", "embedded": True},
        "storage": {
            "default": "local",
            "backends": {
                "local": {"protocol": "file", "root": str(workdir / "files"), "create_root": True}
            },
        },
    }


def merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a None value deletes the key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def run_cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docproxy {' '.join(args)} failed: {result.stderr}")
    return result


class Service:
    """``docproxy serve`` in a child process; stopped and reaped by ``stop``."""

    def __init__(self, config_path: Path, log_path: Path, env: Mapping[str, str] | None = None):
        self.config_path = config_path
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"docproxy exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"docproxy did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the server process, in KiB, from /proc."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/healthz", timeout=5).json()["data"]

    def token(self, *, group: str | None = None, email: str = "jane@example.com") -> str:
        user: dict[str, Any] = {"first_name": "Jane", "last_name": "Doe", "email": email}
        if group is not None:
            user["group_name"] = group
        response = httpx.post(
            f"{self.base_url}/generate-client-auth-token",
            json={
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "fingerprint": "test-fingerprint",
                "user": user,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]["access_token"]


def assert_envelope(response: httpx.Response, status: int, message: str) -> None:
    """The API's error shape: HTTP status == statusCode, empty data, the exact message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"statusCode": status, "data": {}, "message": message}
