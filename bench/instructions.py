"""``python -m bench.instructions``: CPU instructions per request of the whole server, counted.

Request rates on a shared 2-core guest swing by a quarter between identical runs; an
instruction count does not. This runs docproxy (``python -m proxy serve``, one worker, the
benchmark's config) under ``valgrind --tool=callgrind`` twice, sends N1 and then N2 requests
on one keep-alive connection (after the same warm-up), and prints (I2 - I1) / (N2 - N1):
the user-space instructions one request costs, uvicorn and uvloop included, start-up and
shut-down cancelled out. Slow (about a minute) and not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from bench.clients import BenchError, http_request, read_head
from bench.servers import Docproxy, compile_bytecode, make_file

WARM_UP = 50
SMALL = 10 * 1024
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def request_bytes(kind: str, token: str) -> bytes:
    auth = {"Authorization": f"Bearer {token}"}
    if kind == "download":
        return http_request("GET", "/download/small", auth)
    body = json.dumps({"document_id": "small"}).encode()
    return http_request("POST", "/download", {**auth, "Content-Type": "application/json"}, body)


def send_sequentially(port: int, request: bytes, count: int) -> None:
    """``count`` requests on one connection, each sent once the answer before it is read."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(count):
            sock.sendall(request)
            status, headers, body = read_head(sock)
            if status != 200:
                raise BenchError(f"HTTP {status}: {body[:200]!r}")
            length = int(headers["content-length"])
            while len(body) < length:
                more = sock.recv(65536)
                if not more:
                    raise BenchError(f"closed after {len(body)} of {length} body bytes")
                body += more


OBSERVED = {"default": None, "on": True, "off": False}


def instructions(work: Path, kind: str, count: int, out: Path, observed: bool | None) -> int:
    """Total instructions of one server run that issued a token and answered WARM_UP +
    ``count`` requests (a new ``Docproxy`` each run, so each one gets its own token)."""
    proxy = Docproxy(work, s3_endpoint=None, observed=observed)
    proxy.write_config()
    # A fixed hash seed: the same dict layouts, so the same counts, run after run.
    proxy.start(
        {"PYTHONHASHSEED": "0"},
        prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"],
        timeout=300,
    )
    assert proxy.process is not None
    try:
        request = request_bytes(kind, proxy.token())
        send_sequentially(proxy.port, request, WARM_UP)
        send_sequentially(proxy.port, request, count)
    finally:
        proxy.process.stop(timeout=120)  # callgrind writes its file on a clean exit only
    match = _TOTALS.search(out.read_bytes())
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--kind", choices=("download", "presign"), default="download")
    parser.add_argument("--requests", type=int, nargs=2, default=(200, 1200), metavar="N")
    parser.add_argument(
        "--observed",
        choices=tuple(OBSERVED),
        default="default",
        help="on: metrics, JSON logs and the audit trail; off: none of them (rows 3o/4o)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="leave callgrind's files in DIR (for callgrind_annotate)",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench.instructions: valgrind is not installed (apt-get install valgrind)")
        return 2
    n1, n2 = sorted(args.requests)
    # A module whose .pyc is stale would be compiled in the first run only, and that one-off
    # cost would come out of the difference.
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="docproxy-instructions-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        catalog = Docproxy(work, s3_endpoint=None)
        catalog.write_config()
        make_file(catalog.root / "small.pdf", SMALL)
        catalog.register("small", "small.pdf", "small.pdf", SMALL)
        observed = OBSERVED[args.observed]
        first = instructions(work, args.kind, n1, work / f"callgrind.{n1}", observed)
        second = instructions(work, args.kind, n2, work / f"callgrind.{n2}", observed)
    per_request = (second - first) / (n2 - n1)
    print("| measurement | instructions per request |\n|---|---|")
    label = f"{args.kind} of a {SMALL // 1024} KiB document, whole server"
    if args.observed != "default":
        label += f", observability {args.observed}"
    print(f"| {label} | {per_request:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
