"""Several docproxy replicas with one config behind a real nginx load balancer.

nginx sends requests round robin, retries each on the next replica when one cannot be reached,
resets the connection before answering, or answers 502/503 (POSTs too: docproxy's only issue
signed tokens and links), never marks a replica down for failing (``max_fails=0``: while
one restarts and the other drains, both would be, and every request answered 502), and names the
replica(s) it used in ``X-Upstream``
(``$upstream_addr``: ``127.0.0.1:PORT``, or ``A, B`` when it moved on from A to B).
Any replica can be stopped and started again on its own port while nginx keeps running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Service, free_port

NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$msec $request_method $uri $status upstream=$upstream_addr';
    access_log {work}/access.log upstream;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream docproxy {{
{servers}
        keepalive 16;
        keepalive_timeout 4s;   # below docproxy's server.keepalive_timeout (5 s)
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://docproxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;   # links name the balancer's address
            proxy_buffering off;                # bytes reach the client as the replica sends
            # A POST moves on too: a connection a stopping replica had not accepted yet is
            # reset with the request unread; docproxy's POSTs store nothing (tokens, links).
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_connect_timeout 2s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


class Nginx:
    """nginx balancing over ``upstreams`` (loopback ports); ``url`` is its address."""

    def __init__(self, binary: str, workdir: Path, upstreams: list[int]) -> None:
        self.binary = binary
        self.work = workdir
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=0;" for port in upstreams)
        (self.work / "nginx.conf").write_text(
            NGINX_CONF.format(
                # As root, nginx would run as "nobody", who cannot enter the test's folders.
                user="user root;\n" if os.geteuid() == 0 else "",
                work=self.work,
                port=self.port,
                servers=servers,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        command = [self.binary, "-c", str(self.work / "nginx.conf"), "-p", str(self.work)]
        with (self.work / "error.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "-e", "stderr"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.work / "error.log").read_text()
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"nginx did not start:\n{(self.work / 'error.log').read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: open requests finish
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def access_log(self) -> list[str]:
        path = self.work / "access.log"
        return path.read_text().splitlines() if path.exists() else []


class BalancedReplicas:
    """``count`` docproxy processes sharing one config file, each on its own port, and nginx in
    front of them. ``stop(i)``/``start(i)`` take one replica away and bring it back."""

    def __init__(
        self,
        nginx_binary: str,
        workdir: Path,
        config_path: Path,
        env: Mapping[str, str],
        count: int = 2,
    ) -> None:
        self.replicas = [
            Service(config_path, workdir / f"replica-{index}.log", env) for index in range(count)
        ]
        self.nginx = Nginx(nginx_binary, workdir / "nginx", [r.port for r in self.replicas])

    @property
    def url(self) -> str:
        return self.nginx.url

    def address(self, index: int) -> str:
        """How nginx's ``$upstream_addr`` names replica ``index``."""
        return f"127.0.0.1:{self.replicas[index].port}"

    def start_all(self) -> BalancedReplicas:
        for replica in self.replicas:
            replica.start()
        self.nginx.start()
        return self

    def stop(self, index: int) -> None:
        self.replicas[index].stop()

    def start(self, index: int) -> None:
        self.replicas[index].start()

    def stop_all(self) -> None:
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop()

    @contextlib.contextmanager
    def stream_on(
        self, index: int, method: str, path: str, **options: Any
    ) -> Iterator[httpx.Response]:
        """Send the request through nginx until round robin hands it to replica ``index`` alone
        (a repeat is harmless: docproxy only reads); its response, body not yet read."""
        wanted = self.address(index)
        seen = []
        for _ in range(2 * len(self.replicas)):
            with httpx.stream(method, f"{self.url}{path}", timeout=30, **options) as response:
                seen.append(response.headers.get("x-upstream"))
                if seen[-1] == wanted:
                    yield response
                    return
        raise AssertionError(f"nginx never sent {method} {path} to {wanted} alone: {seen}")

    def request_on(self, index: int, method: str, path: str, **options: Any) -> httpx.Response:
        """``stream_on``, with the whole body read."""
        with self.stream_on(index, method, path, **options) as response:
            response.read()
            return response
