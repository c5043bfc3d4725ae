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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import REPO, Docproxy, make_file

WARM_UP = 50
SMALL = 10 * 1024
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: (\d+)\r\n", re.IGNORECASE)


def request_bytes(kind: str, port: int, token: str) -> bytes:
    head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    if kind == "download":
        return f"GET /download/small HTTP/1.1\r\n{head}\r\n".encode()
    body = json.dumps({"document_id": "small"})
    return (
        f"POST /download HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def send_sequentially(port: int, request: bytes, count: int) -> None:
    """``count`` requests, each sent once the answer before it has been read in full."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(count):
            sock.sendall(request)
            answer = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("docproxy closed the connection")
                answer += data
                end = answer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                length = _CONTENT_LENGTH.search(answer[: end + 2])
                if length and len(answer) - end - 4 >= int(length.group(1)):
                    break
            if not answer.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"unexpected answer: {answer[:200]!r}")


def instructions(proxy: Docproxy, kind: str, count: int, out: Path) -> int:
    """Total instructions of one server run that answered WARM_UP + ``count`` requests."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--config",
        str(proxy.config_path),
    ]
    with (out.parent / f"{out.name}.log").open("wb") as log:
        # A fixed hash seed: the same dict layouts, so the same counts, run after run.
        env = {"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"}
        server = subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO, env=env)
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"docproxy under valgrind exited; see {log.name}")
                try:
                    socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            request = request_bytes(kind, proxy.port, proxy.token())
            send_sequentially(proxy.port, request, WARM_UP)
            send_sequentially(proxy.port, request, count)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(120)
    match = _TOTALS.search(out.read_bytes())
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--kind", choices=("download", "presign"), default="download")
    parser.add_argument("--requests", type=int, nargs=2, default=(200, 1200), metavar="N")
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
    # Byte-compile first: a module whose .pyc is stale would be compiled in the first run only,
    # and that one-off cost would come out of the difference.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "proxy", "backends"], cwd=REPO)
    with tempfile.TemporaryDirectory(prefix="docproxy-instructions-") as tmp:
        work = Path(tmp)
        if args.keep:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        proxy = Docproxy(work, s3_endpoint=None)
        proxy.write_config()
        make_file(proxy.root / "small.pdf", SMALL)
        proxy.register("small", "small.pdf", "small.pdf", SMALL)
        first = instructions(proxy, args.kind, n1, work / f"callgrind.{n1}")
        second = instructions(proxy, args.kind, n2, work / f"callgrind.{n2}")
    per_request = (second - first) / (n2 - n1)
    print("| measurement | instructions per request |\n|---|---|")
    print(f"| {args.kind} of a {SMALL // 1024} KiB document, whole server | {per_request:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
