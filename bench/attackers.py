"""Hostile clients held open against a server while it is measured: idle connections,
one-byte-a-second senders and one endless header, each reopened when the server closes it.

Loopback only, bounded by ``stop()``: two threads, stopped and joined there.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100_000
ENDLESS_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "
ENDLESS_CHUNK = b"a" * 16384


@dataclass
class Attack:
    port: int
    idle: int = 200
    slow: int = 50
    reopened: int = 0  # connections the server closed and the attack opened again
    endless_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Attack:
        for target in (self._hold, self._endless):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return None
        sock.setblocking(False)
        return sock

    def _hold(self) -> None:
        """The idle and the slow connections; a slow one sends the next byte of its head
        every second; any closed by the server is opened again."""
        selector = selectors.DefaultSelector()
        sent: dict[socket.socket, int] = {}

        def open_one(kind: str) -> None:
            sock = self._connect()
            if sock is not None:
                selector.register(sock, selectors.EVENT_READ, kind)
                sent[sock] = 0

        for _ in range(self.idle):
            open_one("idle")
        for _ in range(self.slow):
            open_one("slow")
        next_tick = time.monotonic() + 1
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if sock.recv(65536):
                        continue  # an answer (408); the close follows
                except OSError:
                    pass
                selector.unregister(sock)
                sent.pop(sock, None)
                sock.close()
                self.reopened += 1
                open_one(key.data)
            if time.monotonic() >= next_tick:
                next_tick += 1
                for key in list(selector.get_map().values()):
                    if key.data == "slow":
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        position = sent[sock] % len(SLOW_HEAD)
                        with contextlib.suppress(OSError):
                            sock.send(SLOW_HEAD[position : position + 1])
                            sent[sock] += 1
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()

    def _endless(self) -> None:
        """One connection sending a header that never ends, as fast as the server reads it."""
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(ENDLESS_HEAD)
                    while not self._stop.is_set():
                        sock.sendall(ENDLESS_CHUNK)
                        self.endless_bytes += len(ENDLESS_CHUNK)
            except OSError:
                self.reopened += 1
                time.sleep(0.01)
