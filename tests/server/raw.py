"""Raw HTTP/1.1 over a socket: what a hostile or broken client sends, byte for byte."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> Any:
        return json.loads(self.body)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send ``data``; the server may stop reading and answer early (a refused head)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def read_until_close(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as a
    close: the answer was read)."""
    received = bytearray()
    while len(received) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection; all the server answers until it closes."""
    with connect(port, timeout) as sock:
        send_all(sock, data)
        return read_until_close(sock)


def parse(raw: bytes) -> Reply:
    """The first response in ``raw``."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Reply(status, headers, rest[:length])


def request(port: int, data: bytes, timeout: float = 10.0) -> Reply:
    return parse(exchange(port, data, timeout))


def get(path: str, *headers: str, host: str | None = "127.0.0.1") -> bytes:
    """A GET request's bytes; ``host`` None leaves the Host header out."""
    lines = [f"GET {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [*headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (which sends nothing more), at most
    ``timeout``; raises if it is still open then."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start
