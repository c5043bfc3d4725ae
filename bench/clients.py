"""Clients that are not the bottleneck: raw sockets for bytes, wrk (or a fallback) for rates.

curl tops out near 2 GB/s on this machine, so big bodies are read with ``recv_into`` into one
large reused buffer (the kernel copy is the only work per byte). Request rates come from
``wrk`` when it is installed, else from a keep-alive asyncio load generator on raw sockets.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


class BenchError(Exception):
    """A server answered something other than the expected body."""


def http_request(method: str, path: str, headers: Mapping[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise BenchError("connection closed before the response headers")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def download(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    buffer_size: int = 4 * 1024 * 1024,
    expect: int | None = None,
) -> int:
    """GET ``path`` and read the whole body into a reused buffer; the number of body bytes."""
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.sendall(http_request("GET", path, {**(headers or {}), "Connection": "close"}))
        status, response_headers, rest = read_head(sock)
        if status != 200:
            raise BenchError(f"GET {path} on port {port}: HTTP {status}")
        length = int(response_headers["content-length"])
        if expect is not None and length != expect:
            raise BenchError(f"GET {path}: Content-Length {length}, expected {expect}")
        received = len(rest)
        view = memoryview(bytearray(buffer_size))
        while received < length:
            n = sock.recv_into(view)
            if n == 0:
                raise BenchError(f"GET {path}: closed after {received} of {length} bytes")
            received += n
        return received


def parallel_downloads(
    count: int, port: int, path: str, headers: Mapping[str, str], expect: int
) -> tuple[int, float]:
    """``count`` simultaneous downloads (threads; recv_into drops the GIL): (bytes, seconds)."""
    barrier = threading.Barrier(count + 1)
    results: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            results.append(download(port, path, headers, buffer_size=1024 * 1024, expect=expect))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(results), elapsed


def slow_download(
    port: int, path: str, headers: Mapping[str, str], rate: int, seconds: float
) -> int:
    """Read at ``rate`` bytes/s for ``seconds``, then hang up; the bytes read."""
    with socket.create_connection((HOST, port)) as sock:
        # A small receive window, so the server (not the kernel) holds what the client lags.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(http_request("GET", path, {**headers, "Connection": "close"}))
        status, _, rest = read_head(sock)
        if status != 200:
            raise BenchError(f"GET {path}: HTTP {status}")
        received = len(rest)
        view = memoryview(bytearray(64 * 1024))
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            ahead = received - rate * elapsed
            if ahead > 0:
                time.sleep(min(ahead / rate, seconds - elapsed))
                continue
            n = sock.recv_into(view)
            if n == 0:
                break
            received += n
        return received


@dataclass
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """\
wrk.method = "{method}"
wrk.body = '{body}'
{headers}
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def load_wrk(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: str,
    connections: int,
    seconds: float,
) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script.write(_WRK_SCRIPT.format(method=method, body=body, headers=lines))
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                script.name,
                f"http://{HOST}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(script.name).unlink()
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if not (rate and p50 and p99):
        raise BenchError(f"cannot read wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    return LoadResult(
        float(rate.group(1)), _wrk_ms(p50.group(1)), _wrk_ms(p99.group(1)), errors, "wrk"
    )


async def _keep_alive_worker(
    port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            await reader.readexactly(int(match.group(1)) if match else 0)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def load_python(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: str,
    connections: int,
    seconds: float,
) -> LoadResult:
    """The fallback when wrk is absent: keep-alive requests over raw asyncio streams."""
    request = http_request(method, path, headers, body.encode())
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> float:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(
            *(
                _keep_alive_worker(port, request, deadline, latencies, errors)
                for _ in range(connections)
            )
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    if not latencies:
        raise BenchError(f"{method} {path}: no request completed")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return LoadResult(
        len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, len(errors), "python"
    )


def load(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: str = "",
    *,
    connections: int = 32,
    seconds: float = 5.0,
) -> LoadResult:
    runner = load_wrk if wrk_available() else load_python
    return runner(port, method, path, headers, body, connections, seconds)
