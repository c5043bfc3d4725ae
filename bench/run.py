"""``python -m bench``: set everything up on loopback, measure, print one Markdown table.

Every row is docproxy ÷ its baseline measured in the same run, the median of several rounds
that alternate between the two. ``--quick`` runs every row small and short (seconds), so CI
keeps the benchmark working; its figures mean nothing. ``--rows 3,6`` runs only the rows
named (comma-separated: 1, 1b, 2, 3, 4, 4b, 5, 6) and, being partial, does not write
``bench/results/`` (it prints the table only). A full run writes ``bench/results/latest.md``
and adds its line to ``bench/results/history.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.clients import (
    BenchError,
    LoadResult,
    download,
    load,
    parallel_downloads,
    slow_download,
    wrk_available,
)
from bench.servers import (
    REPO,
    S3_BUCKET,
    BenchFile,
    Docproxy,
    MotoS3,
    Nginx,
    StarletteBaseline,
    make_file,
    rss_kib,
)

ROW_ORDER = ("1", "1b", "2", "3", "4", "4b", "5", "6")
ROW_NUMBERS = frozenset(ROW_ORDER)
RESULTS = Path(__file__).resolve().parent / "results"
GiB = 1024**3
MiB = 1024**2
KiB = 1024


@dataclass(frozen=True)
class Plan:
    big: int
    small: int
    s3_size: int
    streams: int
    big_rounds: int
    stream_rounds: int
    s3_rounds: int  # row 6 rounds are short (~0.3 s): more of them, so one slow moment weighs less
    load_seconds: float
    load_rounds: int
    slow_clients: int
    slow_seconds: float
    connections: int = 32


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
    connections=8,
)


@dataclass
class Row:
    number: str
    what: str
    docproxy: str = "-"
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"
    note: str = ""

    def skip(self, reason: str) -> Row:
        self.met = "skipped"
        self.note = reason
        return self


@dataclass
class Bench:
    plan: Plan
    work: Path
    log: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    only: frozenset[str] | None = None  # ``--rows``: the row numbers to run; None = all
    files: dict[str, BenchFile] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt_rate(gbps: float) -> str:
    return f"{gbps:.2f} GB/s"


def fmt_load(result: LoadResult) -> str:
    errors = f", {result.errors} errors" if result.errors else ""
    return (
        f"{result.requests_per_second:,.0f} req/s (p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms{errors})"
    )


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


class RssSampler:
    """Peak resident memory of one process while a row runs, sampled every 10 ms."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_kib = rss_kib(pid)
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid))


def alternate(rounds: int, first: Callable[[], float], second: Callable[[], float]) -> tuple:
    """Run two measurements in alternation; the median of each."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(first())
        b.append(second())
    return median(a), median(b)


def median_load(results: list[LoadResult]) -> LoadResult:
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    return ordered[len(ordered) // 2]


def one_stream(port: int, path: str, headers: dict[str, str], size: int) -> float:
    started = time.perf_counter()
    received = download(port, path, headers, expect=size)
    return received / (time.perf_counter() - started) / 1e9


# --- the rows ------------------------------------------------------------------------------


def row_one_stream(b: Bench, proxy: Docproxy, nginx: Nginx | None) -> Row:
    row = Row("1", f"one {b.plan.big // MiB} MiB download, local backend")
    big = b.files["big"]
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    measure_proxy = lambda: one_stream(proxy.port, "/download/big", auth, big.size)  # noqa: E731
    if nginx is None:
        row.docproxy = fmt_rate(median([measure_proxy() for _ in range(b.plan.big_rounds)]))
        return row.skip("nginx not installed: no baseline")
    measure_nginx = lambda: one_stream(nginx.port, f"/files/{big.key}", {}, big.size)  # noqa: E731
    ours, theirs = alternate(b.plan.big_rounds, measure_proxy, measure_nginx)
    row.docproxy, row.baseline = fmt_rate(ours), f"nginx {fmt_rate(theirs)}"
    row.ratio, row.target, row.met = f"{ours / theirs:.2f}", ">= 0.6", verdict(ours / theirs >= 0.6)
    return row


def row_accel(b: Bench, accel: Docproxy | None, nginx: Nginx | None) -> Row:
    row = Row("1b", "same, nginx in front, docproxy answers X-Accel-Redirect")
    if nginx is None:
        return row.skip("nginx not installed")
    if accel is None:
        return row.skip("docproxy with accel_redirect did not start")
    big = b.files["big"]
    auth = {"Authorization": f"Bearer {accel.token()}"}
    ours, theirs = alternate(
        b.plan.big_rounds,
        lambda: one_stream(nginx.front_port, "/download/big", auth, big.size),
        lambda: one_stream(nginx.port, f"/files/{big.key}", {}, big.size),
    )
    row.docproxy, row.baseline = fmt_rate(ours), f"nginx {fmt_rate(theirs)}"
    row.ratio, row.target, row.met = f"{ours / theirs:.2f}", "≈ 1", verdict(ours / theirs >= 0.8)
    return row


def row_streams(b: Bench, proxy: Docproxy, nginx: Nginx | None) -> Row:
    n = b.plan.streams
    row = Row("2", f"{n} concurrent {b.plan.big // MiB} MiB downloads: aggregate, peak RSS")
    big = b.files["big"]
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    assert proxy.process is not None
    samplers: list[RssSampler] = []

    def measure_proxy() -> float:
        with RssSampler(proxy.process.pid) as sampler:  # type: ignore[union-attr]
            total, seconds = parallel_downloads(n, proxy.port, "/download/big", auth, big.size)
        samplers.append(sampler)
        return total / seconds / 1e9

    if nginx is None:
        ours = median([measure_proxy() for _ in range(b.plan.stream_rounds)])
        theirs = None
    else:
        ours, theirs = alternate(
            b.plan.stream_rounds,
            measure_proxy,
            lambda: (lambda t, s: t / s / 1e9)(
                *parallel_downloads(n, nginx.port, f"/files/{big.key}", {}, big.size)
            ),
        )
    peak = max(s.peak_kib for s in samplers)
    per_download = max((s.peak_kib - s.start_kib) for s in samplers) / n / 1024
    row.docproxy = (
        f"{fmt_rate(ours)}; peak RSS {peak / 1024:.0f} MiB ({per_download:.1f} MiB/download)"
    )
    memory_ok = per_download <= 3.0
    if theirs is None:
        row.target, row.met = "<= 3 MiB/download", verdict(memory_ok)
        row.note = "nginx not installed: no throughput baseline"
        return row
    row.baseline = f"nginx {fmt_rate(theirs)}"
    row.ratio = f"{ours / theirs:.2f}"
    row.target = ">= 0.6; <= 3 MiB/download"
    row.met = verdict(ours / theirs >= 0.6 and memory_ok)
    return row


def row_small(b: Bench, proxy: Docproxy, nginx: Nginx | None) -> Row:
    c = b.plan.connections
    row = Row("3", f"{b.plan.small // KiB} KiB documents end to end (token, catalog), {c} conns")
    small = b.files["small"]
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    ours_runs, theirs_runs = [], []
    for _ in range(b.plan.load_rounds):
        ours_runs.append(
            load(
                proxy.port,
                "GET",
                "/download/small",
                auth,
                connections=c,
                seconds=b.plan.load_seconds,
            )
        )
        if nginx is not None:
            theirs_runs.append(
                load(
                    nginx.port,
                    "GET",
                    f"/files/{small.key}",
                    {},
                    connections=c,
                    seconds=b.plan.load_seconds,
                )
            )
    ours = median_load(ours_runs)
    row.docproxy = fmt_load(ours)
    row.target = ">= 4,000 req/s, p99 < 20 ms"
    met = ours.requests_per_second >= 4000 and ours.p99_ms < 20 and not ours.errors
    row.met = verdict(met)
    if ours.errors:
        b.failures.append(f"row 3: {ours.errors} failed requests")
    if theirs_runs:
        theirs = median_load(theirs_runs)
        row.baseline = "nginx " + fmt_load(theirs)
        row.ratio = f"{ours.requests_per_second / theirs.requests_per_second:.2f}"
    else:
        row.note = "nginx not installed: no baseline"
    return row


def row_presign(
    b: Bench,
    proxy: Docproxy,
    baseline: StarletteBaseline,
    document_id: str,
    number: str,
    label: str,
    goal: int,
) -> Row:
    c = b.plan.connections
    row = Row(number, f"POST /download end to end, {label}, {c} conns")
    headers = {"Authorization": f"Bearer {proxy.token()}", "Content-Type": "application/json"}
    body = f'{{"document_id":"{document_id}"}}'
    ours_runs, theirs_runs = [], []
    for _ in range(b.plan.load_rounds):
        ours_runs.append(
            load(
                proxy.port,
                "POST",
                "/download",
                headers,
                body,
                connections=c,
                seconds=b.plan.load_seconds,
            )
        )
        theirs_runs.append(
            load(
                baseline.port,
                "POST",
                "/download",
                {"Content-Type": "application/json"},
                body,
                connections=c,
                seconds=b.plan.load_seconds,
            )
        )
    ours, theirs = median_load(ours_runs), median_load(theirs_runs)
    if ours.errors:
        b.failures.append(f"row {number}: {ours.errors} failed requests")
    row.docproxy = fmt_load(ours)
    row.baseline = "bare Starlette " + fmt_load(theirs)
    row.ratio = f"{ours.requests_per_second / theirs.requests_per_second:.2f}"
    row.target = f">= {goal:,} req/s"
    row.met = verdict(ours.requests_per_second >= goal and not ours.errors)
    return row


def row_slow(b: Bench, proxy: Docproxy) -> Row:
    n, seconds = b.plan.slow_clients, b.plan.slow_seconds
    row = Row(
        "5", f"{n} slow clients (1 MiB/s) on a {b.plan.big // MiB} MiB file for {seconds:g} s"
    )
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    assert proxy.process is not None
    pid = proxy.process.pid
    before = rss_kib(pid)
    samples: list[int] = []
    threads = [
        threading.Thread(
            target=slow_download, args=(proxy.port, "/download/big", auth, MiB, seconds)
        )
        for _ in range(n)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    while any(t.is_alive() for t in threads):
        samples.append(rss_kib(pid))
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    # Growth while the clients read, once the first third of the run has filled the
    # per-connection buffers and malloc's per-thread arenas (flat afterwards if bounded).
    settle = seconds / 3
    settled = [s for i, s in enumerate(samples) if i * 0.1 >= settle] or samples
    growth = (max(settled) - settled[0]) / 1024
    peak = (max(samples) - before) / 1024 if samples else 0.0
    row.docproxy = (
        f"RSS +{peak:.1f} MiB over idle ({peak / n:.1f} MiB/client); "
        f"+{growth:.1f} MiB from {settle:.1f} s to {time.perf_counter() - started:.0f} s"
    )
    row.target = "flat (<= 2 MiB); <= 3 MiB/client"
    row.met = verdict(growth <= 2.0 and peak / n <= 3.0)
    return row


async def _s3fs_read(endpoint: str, key: str) -> tuple[int, float]:
    """Read the object with s3fs: (bytes, seconds); the client set-up is not timed."""
    from s3fs import S3FileSystem

    fs = S3FileSystem(
        key="test",
        secret="test",
        endpoint_url=endpoint,
        asynchronous=True,
        config_kwargs={"signature_version": "s3v4"},
    )
    session = await fs.set_session()
    try:
        started = time.perf_counter()
        handle = await fs.open_async(f"{S3_BUCKET}/{key}", "rb", block_size=MiB)
        total = 0
        while chunk := await handle.read(MiB):  # short reads are not the end
            total += len(chunk)
        await handle.close()
        return total, time.perf_counter() - started
    finally:
        await session.close()


def row_s3_stream(b: Bench, proxy: Docproxy, moto: MotoS3) -> Row:
    row = Row("6", f"one {b.plan.s3_size // MiB} MiB download from S3 (moto)")
    auth = {"Authorization": f"Bearer {proxy.token()}"}
    size = b.plan.s3_size

    def direct() -> float:
        got, seconds = asyncio.run(_s3fs_read(moto.endpoint, "big.bin"))
        if got != size:
            raise BenchError(f"s3fs read {got} of {size} bytes")
        return size / seconds / 1e9

    ours, theirs = alternate(
        b.plan.s3_rounds,
        lambda: one_stream(proxy.port, "/download/s3-big", auth, size),
        direct,
    )
    row.docproxy, row.baseline = fmt_rate(ours), f"s3fs direct {fmt_rate(theirs)}"
    row.ratio, row.target = f"{ours / theirs:.2f}", ">= 0.9"
    row.met = verdict(ours / theirs >= 0.9)
    return row


# --- setup and report ------------------------------------------------------------------------


def s3_supported() -> bool:
    from backends.registry import known_protocols

    return "s3" in known_protocols()


def versions(nginx: Nginx | None) -> str:
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
    found.append(f"nginx {nginx.version() if nginx else 'absent'}")
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


def render(b: Bench, nginx: Nginx | None, started: dt.datetime, mode: str) -> str:
    lines = [
        f"# docproxy benchmark ({mode})",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Versions: {versions(nginx)}",
        f"- docproxy commit: {commit()}",
        "- Setup: everything on loopback on this machine, client included; docproxy is "
        "`python -m proxy serve` with one worker (uvicorn + uvloop + httptools; log_level info, "
        "so one log line per download, and `server.access_log: false`, as nginx runs with "
        "access_log off); nginx (when installed) runs its own config: one worker, sendfile on, "
        "access_log off; files are in "
        "the page cache. Each figure is the median of several rounds, docproxy and baseline "
        f"alternating. Load: {'wrk -t1' if wrk_available() else 'python keep-alive client'}.",
        "",
        "| # | measurement | docproxy | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in b.rows:
        ours = r.docproxy if not r.note else f"{r.docproxy} ({r.note})"
        lines.append(
            f"| {r.number} | {r.what} | {ours} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |"
        )
    return "\n".join(lines) + "\n"


HISTORY_HEADER = f"""# docproxy benchmark history

One line per full run of ``python -m bench`` (which adds it): each row's ratio of docproxy to
its baseline, measured in the same run; row 5, which has no baseline, says whether it met its
target. "(no)" marks a row that missed its target. ``latest.md`` has the last run in full, and
``bench/README.md`` says what each row measures.

| date (UTC) | commit | machine | {" | ".join(ROW_ORDER)} |
|---|---|---|{"---|" * len(ROW_ORDER)}
"""


def history_line(date: str, commit: str, machine: str, rows: dict[str, tuple[str, str]]) -> str:
    """One line of history.md from each row's ratio and verdict (``met``), by row number."""
    cells = []
    for number in ROW_ORDER:
        ratio, met = rows.get(number, ("-", "-"))
        met = met.strip("*")
        if ratio == "-":
            cells.append(met)
        else:
            cells.append(f"{ratio} (no)" if met == "no" else ratio)
    return f"| {date} | {commit} | {machine} | {' | '.join(cells)} |\n"


def add_to_history(line: str) -> None:
    history = RESULTS / "history.md"
    if not history.exists():
        history.write_text(HISTORY_HEADER)
    with history.open("a") as out:
        out.write(line)


def run_rows(b: Bench, stops: list[Callable[[], None]]) -> Nginx | None:
    """Run every row; each server started is registered in ``stops`` at once, so the caller
    stops it even when a row fails half-way."""
    plan, work = b.plan, b.work
    moto = MotoS3(work)
    use_s3 = moto.available and s3_supported()
    if use_s3:
        b.log("starting moto_server")
        moto.start()
        stops.append(moto.stop)

    # moto's credentials, named by the S3 backend's key_env/secret_env; set here too because
    # register() parses the config in this process.
    env = {"BENCH_S3_KEY": "test", "BENCH_S3_SECRET": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    proxy = Docproxy(work, s3_endpoint=moto.endpoint if use_s3 else None)
    accel = Docproxy(work, s3_endpoint=None, accel=True, name="docproxy-accel")
    for name, size in (("big", plan.big), ("small", plan.small)):
        key = f"{name}-{size}.pdf"
        b.log(f"writing {size:,} bytes to {key}")
        make_file(proxy.root / key, size)
        b.files[name] = BenchFile(name, key, size)
    proxy.write_config()
    accel.write_config()
    for f in b.files.values():
        proxy.register(f.document_id, f.key, f"{f.document_id}.pdf", f.size)
    if use_s3:
        s3_source = work / "s3-big.bin"
        make_file(s3_source, plan.s3_size)
        b.log(f"uploading {plan.s3_size:,} bytes to moto")
        moto.upload("big.bin", s3_source)
        proxy.register("s3-big", f"s3://{S3_BUCKET}/big.bin", "s3-big.pdf", plan.s3_size)
        proxy.register("s3-small", f"s3://{S3_BUCKET}/big.bin", "s3-small.pdf", plan.s3_size)
    b.log("starting docproxy")
    proxy.start(env)
    stops.append(proxy.stop)

    nginx: Nginx | None = Nginx(work, proxy.root, accel.port)
    if not nginx.available:
        b.log("nginx is not installed (apt-get install -y nginx): the nginx rows are skipped")
        nginx = None
    accel_ready = False
    if nginx is not None:
        b.log("starting docproxy with X-Accel-Redirect, and nginx (one worker, sendfile on)")
        try:
            accel.start(env)
            stops.append(accel.stop)
            accel_ready = True
        except RuntimeError as exc:
            b.failures.append(f"docproxy with accel_redirect did not start: {exc}")
        nginx.start()
        stops.append(nginx.stop)
    baseline = StarletteBaseline(work)
    baseline.start()
    stops.append(baseline.stop)

    # Warm up: page cache, the JIT-free but lazily imported paths, the token.
    download(proxy.port, "/download/small", {"Authorization": f"Bearer {proxy.token()}"})

    steps: list[tuple[str, Callable[[], Row]]] = [
        ("1", lambda: row_one_stream(b, proxy, nginx)),
        ("1b", lambda: row_accel(b, accel if accel_ready else None, nginx)),
        ("2", lambda: row_streams(b, proxy, nginx)),
        ("3", lambda: row_small(b, proxy, nginx)),
        ("4", lambda: row_presign(b, proxy, baseline, "small", "4", "local HMAC link", 4000)),
    ]
    if use_s3:
        steps.append(
            (
                "4b",
                lambda: row_presign(b, proxy, baseline, "s3-small", "4b", "S3 SigV4 (moto)", 2500),
            )
        )
    steps.append(("5", lambda: row_slow(b, proxy)))
    if use_s3:
        steps.append(("6", lambda: row_s3_stream(b, proxy, moto)))
    if b.only is not None:
        steps = [(number, step) for number, step in steps if number in b.only]
    for number, step in steps:
        b.log(f"row {number}")
        try:
            b.rows.append(step())
        except (BenchError, OSError, RuntimeError) as exc:
            b.failures.append(f"row {number}: {exc}")
            b.rows.append(Row(number, "failed", note=str(exc)).skip(str(exc)))
    if not use_s3 and (b.only is None or b.only & {"4b", "6"}):
        reason = (
            "moto_server not installed"
            if not moto.available
            else "no `s3` backend in backends.registry yet"
        )
        b.rows.append(Row("4b", "POST /download end to end, S3 SigV4 (moto)").skip(reason))
        b.rows.append(
            Row("6", f"one {plan.s3_size // MiB} MiB download from S3 (moto)").skip(reason)
        )
    b.rows.sort(key=lambda r: (int(r.number.rstrip("b")), r.number))
    for r in b.rows:
        if r.met == "skipped" and not r.docproxy.strip("-"):
            r.docproxy = f"skipped: {r.note}"
            r.note = ""
    b.log(f"docproxy log: {proxy.log_path}")
    return nginx


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
    args = parser.parse_args(argv)
    only = None
    if args.rows:
        only = frozenset(r.strip() for r in args.rows.split(",") if r.strip())
        unknown = only - ROW_NUMBERS
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; known: {sorted(ROW_NUMBERS)}")
    plan = QUICK if args.quick else FULL
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="docproxy-bench-"))

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    bench = Bench(plan, work, log, only=only)
    stops: list[Callable[[], None]] = []
    nginx = None
    try:
        nginx = run_rows(bench, stops)
    finally:
        for stop in reversed(stops):
            stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    mode = "quick smoke run, figures meaningless" if args.quick else "full run"
    if only is not None:
        mode += f", rows {', '.join(sorted(only))} only"
    table = render(bench, nginx, started, mode)
    print(table)
    if not args.quick and not args.no_save and only is None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.md").write_text(table)
        rows = {r.number: (r.ratio, r.met) for r in bench.rows}
        add_to_history(history_line(f"{started:%Y-%m-%d %H:%M}", commit(), machine(), rows))
        log(f"wrote {RESULTS / 'latest.md'} and a line of {RESULTS / 'history.md'}")
    for failure in bench.failures:
        log(f"FAILED {failure}")
    return 1 if bench.failures else 0
