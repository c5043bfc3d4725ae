"""``python -m bench``: set everything up on loopback, measure, print one Markdown table.

Every row is docproxy ÷ its baseline measured in the same run, the median of several rounds
that alternate between them. ``--quick`` runs every row small and short (seconds), so CI
keeps the benchmark working; its figures mean nothing. ``--rows 3,6`` runs only the rows
named (comma-separated: 1, 1b, 2, 2w, 3, 3w, 3r, 4, 4b, 4r, 5, 6, 7, 8) and, being partial, does not
write ``bench/results/`` (it prints the table only). A full run writes
``bench/results/latest.md`` and adds its line to ``bench/results/history.md``.

The rows themselves live in ``bench.rows`` (one module per group, listed in its registry);
this module holds the plans, starts each server the chosen rows need once (shared by them),
runs the rows and renders the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Protocol

from bench import history
from bench.clients import BenchError, download, wrk_available
from bench.measure import Bench, GiB, KiB, MiB, Plan, Row
from bench.rows.registry import groups, known_rows, table_order
from bench.servers import (
    REPO,
    S3_BUCKET,
    SENDFILE_ENV,
    BenchFile,
    Docproxy,
    MotoS3,
    Nginx,
    Rclone,
    StarletteBaseline,
    make_file,
)

RESULTS = Path(__file__).resolve().parent / "results"

FULL = Plan(
    big=GiB,
    small=10 * KiB,
    s3_size=200 * MiB,
    streams=20,
    big_rounds=5,
    stream_rounds=3,
    s3_rounds=9,
    load_seconds=5,
    load_rounds=3,
    slow_clients=5,
    slow_seconds=10,
    starts=5,
    idle_seconds=2,
)
QUICK = Plan(
    big=32 * MiB,
    small=10 * KiB,
    s3_size=4 * MiB,
    streams=4,
    big_rounds=1,
    stream_rounds=1,
    s3_rounds=1,
    load_seconds=1,
    load_rounds=1,
    slow_clients=2,
    slow_seconds=1.5,
    starts=1,
    idle_seconds=0.5,
    connections=8,
    zip_documents=4,
    zip_size=2 * MiB,
)


class Server(Protocol):
    @property
    def missing(self) -> str | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


# --- the servers -----------------------------------------------------------------------------


def s3_supported() -> bool:
    from backends.registry import known_protocols

    return "s3" in known_protocols()


REDIS_URL = "redis://127.0.0.1:6379/0"


def start_servers(b: Bench, needed: frozenset[str], stops: list[Callable[[], None]]) -> None:
    """Start each server in ``needed`` once, in dependency order, and note why any is missing.
    Each server started is registered in ``stops`` at once, so the caller stops it even when
    a later one fails."""
    plan, work = b.plan, b.work
    if "docproxy" in needed:
        # docproxy always has its S3 backend when moto is there, so that what it imports and
        # holds in memory is the same whichever rows run.
        needed |= {"moto"}
    moto = MotoS3(work)
    if "moto" in needed and not s3_supported():
        b.servers.missing["moto"] = "no `s3` backend in backends.registry"
    else:
        start(b, "moto", moto, needed, stops)
    with_s3 = b.servers.get("moto", MotoS3) is not None
    # moto's credentials, named by the S3 backend's key_env/secret_env; set here too because
    # register() parses the config in this process.
    os.environ.update(
        {"BENCH_S3_KEY": "test", "BENCH_S3_SECRET": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    proxy = Docproxy(work, s3_endpoint=moto.endpoint if with_s3 else None)
    accel = Docproxy(work, s3_endpoint=None, accel=True, name="docproxy-accel")
    two = Docproxy(work, s3_endpoint=None, workers=2, name="docproxy-2w")
    plain = Docproxy(work, s3_endpoint=None, name="docproxy-plain", observed=False)
    observed = Docproxy(work, s3_endpoint=None, name="docproxy-observed", observed=True)
    shared = Docproxy(work, s3_endpoint=None, name="docproxy-redis", redis_url=REDIS_URL)
    servers: dict[str, Server] = {
        "docproxy": proxy,
        "docproxy-accel": accel,
        "docproxy-2w": two,
        "docproxy-plain": plain,
        "docproxy-observed": observed,
        "docproxy-redis": shared,
        "nginx": Nginx(work, proxy.root, accel.port),
        "nginx-2w": Nginx(work, proxy.root, accel.port, workers=2, name="nginx-2w"),
        "rclone": Rclone(work, proxy.root),
        "starlette": StarletteBaseline(work),
    }
    for name, size in (("big", plan.big), ("small", plan.small)):
        key = f"{name}-{size}.pdf"
        b.log(f"writing {size:,} bytes to {key}")
        make_file(proxy.root / key, size)
        b.files[name] = BenchFile(name, key, size)
    for instance in (proxy, accel, two, shared, plain, observed):
        instance.write_config()  # all share one catalog file and one local root
    for f in b.files.values():
        proxy.register(f.document_id, f.key, f"{f.document_id}.pdf", f.size)
    if with_s3:
        s3_source = work / "s3-big.bin"
        make_file(s3_source, plan.s3_size)
        b.log(f"uploading {plan.s3_size:,} bytes to moto")
        moto.upload("big.bin", s3_source)
        proxy.register("s3-big", f"s3://{S3_BUCKET}/big.bin", "s3-big.pdf", plan.s3_size)
        proxy.register("s3-small", f"s3://{S3_BUCKET}/big.bin", "s3-small.pdf", plan.s3_size)
    for name, server in servers.items():
        start(b, name, server, needed, stops)
    if b.servers.get("docproxy", Docproxy) is not None:
        # Warm up: page cache, the lazily imported paths, the token.
        download(proxy.port, "/download/small", {"Authorization": f"Bearer {proxy.token()}"})


def start(
    b: Bench, name: str, server: Server, needed: frozenset[str], stops: list[Callable[[], None]]
) -> None:
    if name not in needed:
        return
    if server.missing:
        b.servers.missing[name] = server.missing
        b.log(f"{server.missing}: the rows that need {name} say so")
        return
    b.log(f"starting {name}")
    try:
        server.start()
    except RuntimeError as exc:
        stops.append(server.stop)
        b.servers.missing[name] = f"{name} did not start"
        b.failures.append(f"{name} did not start: {exc}")
        return
    stops.append(server.stop)
    b.servers.started[name] = server


def run_rows(b: Bench, only: frozenset[str] | None, stops: list[Callable[[], None]]) -> None:
    """Start the servers the chosen rows need, then run each row group once."""
    chosen = [
        (group, frozenset(n for n in group.numbers if only is None or n in only))
        for group in groups()
    ]
    chosen = [(group, selected) for group, selected in chosen if selected]
    needed = frozenset(
        server for group, selected in chosen for n in selected for server in group.needs[n]
    )
    if needed:
        start_servers(b, needed, stops)
    for group, selected in chosen:
        b.log(f"row {', '.join(selected_in_order(group.numbers, selected))}")
        try:
            b.rows.extend(group.measure(b, selected))
        except (BenchError, OSError, RuntimeError) as exc:
            for number in selected_in_order(group.numbers, selected):
                b.failures.append(f"row {number}: {exc}")
                b.rows.append(Row(number, "failed").skip(str(exc)))
    b.rows.sort(key=lambda row: table_order(row.number))
    for r in b.rows:
        if r.met == "skipped" and not r.docproxy.strip("-"):
            r.docproxy = f"skipped: {r.note}"
            r.note = ""
    proxy = b.servers.get("docproxy", Docproxy)
    if proxy is not None:
        b.log(f"docproxy log: {proxy.log_path}")


def selected_in_order(numbers: tuple[str, ...], selected: frozenset[str]) -> list[str]:
    return [n for n in numbers if n in selected]


# --- the report ------------------------------------------------------------------------------


def versions() -> str:
    names = ["starlette", "uvicorn", "uvloop", "httptools", "joserfc", "databases", "s3fs", "moto"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    wrk = "absent"
    if wrk_available():
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (out.stdout + out.stderr).split()[1] if (out.stdout + out.stderr).split() else "?"
    found.append(f"nginx {Nginx.version()}")
    found.append(f"rclone {Rclone.version()}")
    found.append(f"wrk {wrk}")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}"


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "proxy", "backends"],
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.strip()
    return (out.stdout.strip() or "unknown") + (" (+ uncommitted changes)" if dirty else "")


SETUP = [
    "- Setup: everything on loopback on this machine, the load generator (wrk or the Python "
    "clients) included: it shares the {cores} cores with the servers. Files are in the page "
    "cache. Each figure is the median of several rounds, the servers taking turns. "
    "Load: {load}.",
    "- docproxy: `python -m proxy serve`, one worker (two in rows 2w and 3w); uvicorn + uvloop "
    "+ httptools; log_level info, so one log line per download, and `server.access_log: "
    "false`, as nginx runs with access_log off.",
    "- nginx: its own config, sendfile on, access_log off, as many workers as the docproxy it "
    "is measured against: one, two in row 2w.",
    "- rclone (the peer): `rclone serve http` with basic auth over the same folder, "
    "GOMAXPROCS=1 (one core, as docproxy's one worker); its cell is its figure and, in "
    "brackets, its ratio to the baseline (nginx).",
    "- CPU s/GB: user + system CPU seconds of each server's whole process tree (from /proc) "
    "per GB it sent, docproxy / baseline / rclone.",
]


def render(b: Bench, started: dt.datetime, mode: str) -> str:
    load = "wrk -t1" if wrk_available() else "python keep-alive client"
    lines = [
        f"# docproxy benchmark ({mode})",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- docproxy commit: {commit()}",
        *(line.format(cores=os.cpu_count(), load=load) for line in SETUP),
        "",
        "| # | measurement | docproxy | baseline | ratio | rclone (÷ baseline) | CPU s/GB "
        "| target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in b.rows:
        ours = r.docproxy if not r.note else f"{r.docproxy} ({r.note})"
        lines.append(
            f"| {r.number} | {r.what} | {ours} | {r.baseline} | {r.ratio} | {r.peer} | {r.cpu} "
            f"| {r.target} | {r.met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (for CI)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write bench/results/"
    )
    parser.add_argument(
        "--rows",
        help="run only these rows, comma-separated (e.g. 3,6); prints only, saves nothing",
    )
    parser.add_argument(
        "--no-sendfile",
        action="store_true",
        help="every docproxy with download.sendfile: false (local bodies read through Python)",
    )
    args = parser.parse_args(argv)
    if args.no_sendfile:
        os.environ[SENDFILE_ENV] = "0"  # read by each Docproxy's config, in this process
    only = None
    if args.rows:
        only = frozenset(r.strip() for r in args.rows.split(",") if r.strip())
        unknown = only - set(known_rows())
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; known: {', '.join(known_rows())}")
    plan = QUICK if args.quick else FULL
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="docproxy-bench-"))

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    bench = Bench(plan, work, log)
    stops: list[Callable[[], None]] = []
    try:
        run_rows(bench, only, stops)
    finally:
        for stop in reversed(stops):
            stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    mode = "quick smoke run, figures meaningless" if args.quick else "full run"
    if args.no_sendfile:
        mode += ", download.sendfile off"
    if only is not None:
        mode += f", rows {', '.join(n for n in known_rows() if n in only)} only"
    table = render(bench, started, mode)
    print(table)
    if not args.quick and not args.no_save and only is None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.md").write_text(table)
        rows = [(r.number, r.ratio, r.met) for r in bench.rows]  # in table order already
        line = history.line(f"{started:%Y-%m-%d %H:%M}", commit(), machine(), rows)
        history.add(RESULTS / "history.md", line)
        log(f"wrote {RESULTS / 'latest.md'} and a line of {RESULTS / 'history.md'}")
    for failure in bench.failures:
        log(f"FAILED {failure}")
    return 1 if bench.failures else 0
