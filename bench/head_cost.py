"""What one client sending a huge request head costs docproxy: resident memory, CPU time, and
the wait of other clients meanwhile. Run:

    python bench/head_cost.py [--mib 200]

It starts docproxy (embedded default) on a free port in a temporary folder; one connection
sends a header of ``--mib`` MiB as fast as it can (reconnecting when refused, until all is
sent), while another client times ``GET /healthz`` on its own connections.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import cpu_seconds
from tests.harness import Service, base_config, write_config

MIB = 1024 * 1024
CHUNK = b"a" * (256 * 1024)


def send_huge_head(port: int, total: int) -> tuple[int, int]:
    """(bytes written into the sockets, connections used): the server reads only its bound of
    each connection's bytes and drops the rest with the connection."""
    sent = connections = 0
    while sent < total:
        connections += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
                while sent < total:
                    sock.sendall(CHUNK)
                    sent += len(CHUNK)
        except OSError:
            continue
    return sent, connections


def healthz_waits(port: int, stop: threading.Event, waits: list[float]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            while sock.recv(65536):
                pass
        waits.append(time.perf_counter() - started)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        config = write_config(workdir / "config.yaml", base_config(workdir))
        service = Service(config, workdir / "service.log").start()
        try:
            assert service.process is not None
            pid = service.process.pid
            rss_before, _ = service.memory_kib()
            cpu_before = cpu_seconds(pid)
            stop, waits = threading.Event(), []
            prober = threading.Thread(target=healthz_waits, args=(service.port, stop, waits))
            prober.start()
            started = time.perf_counter()
            sent, connections = send_huge_head(service.port, args.mib * MIB)
            elapsed = time.perf_counter() - started
            stop.set()
            prober.join()
            rss_after, peak = service.memory_kib()
            cpu = cpu_seconds(pid) - cpu_before
            refusals = service.log().count("431 Request header fields too large")
        finally:
            service.stop()
    print(
        f"{sent / MIB:.0f} MiB of header in {elapsed:.1f} s over {connections} connections "
        f"({refusals} answered 431): RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB "
        f"(peak {peak / 1024:.1f}), server CPU {cpu:.2f} s; /healthz meanwhile: median "
        f"{statistics.median(waits) * 1000:.1f} ms, max {max(waits) * 1000:.1f} ms "
        f"over {len(waits)} requests"
    )


if __name__ == "__main__":
    main()
