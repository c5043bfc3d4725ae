"""Memory and storage reads of docproxy while many slow clients download one big file.

The figure the service is held to: 20 clients reading a 1 GiB file at 1 MiB/s each. Run:

    python bench/slow_clients.py [--clients 20] [--size-mib 1024] [--rate-mib 1] [--seconds 30]

It starts docproxy (embedded default, local backend) on a free port in a temporary folder and
prints the server's RSS over time and how much it read from storage against what clients took.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.catalog.embedded import add_file
from proxy.config.loading import load_settings
from tests.harness import Service, base_config, write_config
from tests.http.test_streaming import RawDownload
from tests.served import SETUPS, Served

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate-mib", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        config = write_config(workdir / "config.yaml", base_config(workdir))
        service = Service(config, workdir / "service.log").start()
        try:
            source = workdir / "big.bin"
            with source.open("wb") as sink:
                for _ in range(args.size_mib):
                    sink.write(os.urandom(MIB))
            document_id = add_file(load_settings(config), source, name="big.txt")
            source.unlink()
            served = Served("local", service, workdir, SETUPS["local"], token=service.token())
            run(served, document_id, args)
        finally:
            service.stop()


def run(served: Served, document_id: str, args: argparse.Namespace) -> None:
    rate = args.rate_mib * MIB
    baseline = served.service.memory_kib()[0]
    before = served.reads()["bytes_read"]
    taken = [0] * args.clients

    def reader(index: int) -> None:
        download = RawDownload(served, document_id, "direct")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.seconds:
            allowed = int(elapsed * rate) - download.body_bytes
            if allowed > 0:
                download.read(min(allowed, 256 * 1024))
            else:
                time.sleep(0.02)
        taken[index] = download.body_bytes
        download.close()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    peak = baseline
    next_report = 0.0
    while any(t.is_alive() for t in threads):
        rss = served.service.memory_kib()[0]
        peak = max(peak, rss)
        if time.monotonic() - started >= next_report:
            read = (served.reads()["bytes_read"] - before) / MIB
            print(
                f"t={time.monotonic() - started:5.1f}s RSS {rss / 1024:6.1f} MiB, "
                f"store read {read:7.1f} MiB"
            )
            next_report += 5
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    read = (served.reads()["bytes_read"] - before) / MIB
    print(
        f"{args.clients} clients x {args.rate_mib} MiB/s for {args.seconds}s "
        f"on {args.size_mib} MiB: RSS {baseline / 1024:.1f} -> peak {peak / 1024:.1f} MiB "
        f"(+{(peak - baseline) / 1024:.1f}); "
        f"store read {read:.0f} MiB, clients took {sum(taken) / MIB:.0f} MiB"
    )


if __name__ == "__main__":
    main()
