"""The servers a benchmark run starts on loopback, each on a free port, and stops again.

docproxy (``python -m proxy serve``, one worker or more), nginx (its own config: sendfile on,
as many workers as the docproxy it is measured against), rclone (``rclone serve http`` with
basic auth, the peer), a bare Starlette JSON route (the presign baseline), moto_server (S3),
and the embedded default sidecar (the repository's ``config.yaml``, started cold).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent

TOKEN_KEY = "bench-token-key-0123456789abcdef"
LINK_KEY = "bench-link-key-0123456789abcdef"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"
S3_BUCKET = "bench"
ACCEL_PREFIX = "/protected/"
# Set to "0" (by ``--no-sendfile``): every docproxy runs with ``download.sendfile: false``.
SENDFILE_ENV = "DOCPROXY_BENCH_SENDFILE"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited at start:\n{read_log(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} did not listen on {port} within {timeout}s")


def read_log(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class Process:
    """A child process with its output in a log file; ``stop`` sends SIGINT, then SIGKILL."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int, timeout: float = 30.0) -> None:
        wait_for_port(port, self.spawn(), timeout, self.log)

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the program and return at once (``start`` also waits for its port)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=self.env
            )
        return self.process

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def compile_bytecode() -> None:
    """Byte-compile docproxy's packages, as an installed copy is: a start (or a run counted
    with callgrind) must not include compiling modules whose .pyc is missing or stale."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "proxy", "backends"], cwd=REPO)


@dataclass
class BenchFile:
    document_id: str
    key: str  # path under the local root (or the S3 key)
    size: int


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data, written in 1 MiB blocks (it stays in page cache)."""
    block = os.urandom(min(size, 1024 * 1024))
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            out.write(block[:remaining])
            remaining -= len(block)


def redis_missing(url: str) -> str | None:
    """Why Redis at ``url`` cannot be used, or None."""
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (pip install redis)"

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"no Redis at {url} ({exc})"
    return None


class Docproxy:
    """``python -m proxy serve`` with an embedded catalog and local root under ``workdir``."""

    missing: str | None = None

    def __init__(
        self,
        workdir: Path,
        *,
        s3_endpoint: str | None,
        accel: bool = False,
        workers: int = 1,
        name: str = "docproxy",
        observed: bool | None = None,
        redis_url: str | None = None,
    ):
        self.workdir = workdir
        self.name = name
        self.redis_url = redis_url  # the shared state in Redis (revocations, counters)
        if redis_url is not None:
            self.missing = redis_missing(redis_url)
        self.workers = workers
        self.root = workdir / "files"  # shared by every instance in one run, as is the catalog
        self.root.mkdir(exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / f"{name}.yaml"
        self.s3_endpoint = s3_endpoint
        self.accel = accel
        # True: metrics on, JSON logs with the audit trail; False: metrics and audit off;
        # None: the config's defaults.
        self.observed = observed
        self.process: Process | None = None
        self._token: str | None = None

    def config(self) -> dict[str, Any]:
        backends: dict[str, Any] = {"local": {"protocol": "file", "root": str(self.root)}}
        if self.s3_endpoint:
            backends["s3"] = {
                "protocol": "s3",
                "bucket": S3_BUCKET,
                "endpoint_url": self.s3_endpoint,
                "region": "us-east-1",
                "key_env": "BENCH_S3_KEY",
                "secret_env": "BENCH_S3_SECRET",
            }
        config: dict[str, Any] = {
            # docproxy's own line per download stays on (log_level info); uvicorn's extra
            # access line per request is off, as nginx's access_log is in its config here.
            "server": {
                "host": "127.0.0.1",
                "port": self.port,
                "workers": self.workers,
                "log_level": "info",
                "access_log": False,
            },
            "auth": {
                "signing_key": TOKEN_KEY,
                "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}],
            },
            "presign": {"signing_key": LINK_KEY, "ttl": 3600},
            "catalog": {"url": f"sqlite:///{self.workdir}/docproxy.db", "embedded": True},
            "storage": {"default": "local", "backends": backends},
            "download": {"cache_control": "no-cache"},
        }
        if os.environ.get(SENDFILE_ENV) == "0":
            config["download"]["sendfile"] = False
        if self.accel:
            config["download"]["accel_redirect"] = {"enabled": True, "prefix": ACCEL_PREFIX}
        if self.observed is not None:
            config["metrics"] = {"enabled": self.observed}
            config["server"]["audit_log"] = self.observed
            config["server"]["log_format"] = "json" if self.observed else "text"
        if self.redis_url is not None:
            config["state"] = {"redis_url": self.redis_url, "key_prefix": "docproxy-bench:"}
        return config

    def register(self, document_id: str, file_path: str, name: str, size: int) -> None:
        """One catalog row, written straight into the embedded SQLite file (no copy of the file)."""
        from proxy.catalog.embedded import ensure_schema
        from proxy.catalog.sqlite_reader import sqlite_file
        from proxy.config.loading import load_settings

        settings = load_settings(self.config_path)
        ensure_schema(settings)
        with sqlite3.connect(sqlite_file(settings.catalog.url)) as db:
            db.execute(
                "INSERT OR REPLACE INTO documents (id, file_path, name, type, size)"
                " VALUES (?, ?, ?, ?, ?)",
                (document_id, file_path, name, "application/pdf", size),
            )

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def start(
        self,
        env: dict[str, str] | None = None,
        *,
        prefix: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        """``prefix`` runs the server under another program (``bench.instructions``: valgrind)."""
        self.process = Process(
            self.name,
            [*prefix, sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path)],
            self.log_path,
            env,
        )
        self.process.start(self.port, timeout)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.base_url}/generate-client-auth-token",
                json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                timeout=10,
            )
            response.raise_for_status()
            self._token = response.json()["data"]["access_token"]
        return self._token


NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    fastcgi_temp_path {work}/{name}-fastcgi;
    uwsgi_temp_path {work}/{name}-uwsgi;
    scgi_temp_path {work}/{name}-scgi;
    types {{ application/pdf pdf; }}
    default_type application/octet-stream;
    upstream docproxy {{
        server 127.0.0.1:{docproxy_port};
        keepalive 64;
    }}
    # The baseline: nginx serving the very files docproxy serves.
    server {{
        listen 127.0.0.1:{port};
        location /files/ {{ alias {root}/; }}
    }}
    # docproxy behind nginx, answering with X-Accel-Redirect (row 1b).
    server {{
        listen 127.0.0.1:{front_port};
        location / {{
            proxy_pass http://docproxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
        location {accel_prefix} {{
            internal;
            alias {root}/;
        }}
    }}
}}
"""


class Nginx:
    """nginx from the distribution with its own config: sendfile on, free ports, ``workers``
    worker processes (one unless measured against docproxy with more)."""

    def __init__(
        self,
        workdir: Path,
        root: Path,
        docproxy_port: int,
        *,
        workers: int = 1,
        name: str = "nginx",
    ):
        self.binary = self.find()
        self.name = name
        self.workers = workers
        self.workdir = workdir
        self.root = root
        self.docproxy_port = docproxy_port
        self.port = free_port()
        self.front_port = free_port()
        self.process: Process | None = None

    @property
    def missing(self) -> str | None:
        return None if self.binary else "nginx not installed"

    @staticmethod
    def find() -> str | None:
        return shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )

    @staticmethod
    def version() -> str:
        binary = Nginx.find()
        if not binary:
            return "absent"
        out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr
        return out.strip().split("/", 1)[-1]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        assert self.binary
        conf = self.workdir / f"{self.name}.conf"
        # Run as root, nginx would hand requests to "nobody", who cannot read the temp dir.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf.write_text(
            NGINX_CONF.format(
                user=user,
                workers=self.workers,
                name=self.name,
                work=self.workdir,
                port=self.port,
                front_port=self.front_port,
                root=self.root,
                docproxy_port=self.docproxy_port,
                accel_prefix=ACCEL_PREFIX,
            )
        )
        self.process = Process(
            self.name,
            [self.binary, "-c", str(conf), "-p", str(self.workdir), "-e", "stderr"],
            self.workdir / f"{self.name}.log",
        )
        self.process.start(self.port)
        wait_for_port(self.front_port, self.process.process, 10, self.process.log)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process:
            self.process.stop(signal.SIGQUIT)


class StarletteBaseline:
    """A bare Starlette route returning the presign JSON, on uvicorn with docproxy's settings."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.process = Process(
            "starlette",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.baseline_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "info",
                # docproxy runs with server.access_log false here: so does its baseline.
                "--no-access-log",
            ],
            workdir / "starlette.log",
        )

    missing: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.process.start(self.port)

    def stop(self) -> None:
        self.process.stop()


class MotoS3:
    """moto_server on a free port with one bucket; None when moto is not installed."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("moto_server")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = Process(
            "moto",
            [self.binary or "moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            workdir / "moto.log",
        )

    @property
    def missing(self) -> str | None:
        return None if self.binary else "moto_server not installed"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.process.start(self.port)

    def stop(self) -> None:
        self.process.stop()

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )

    def upload(self, key: str, path: Path) -> None:
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=S3_BUCKET)
        client.upload_file(str(path), S3_BUCKET, key)


RCLONE_USER = "bench"
RCLONE_PASSWORD = "bench-password"


class Rclone:
    """``rclone serve http`` over the files docproxy serves, with basic auth: the tool a user
    would otherwise pick. ``GOMAXPROCS`` caps it at the cores the docproxy it is measured
    against has (one worker, one core)."""

    def __init__(self, workdir: Path, root: Path, *, cores: int = 1):
        self.binary = shutil.which("rclone")
        self.cores = cores
        self.port = free_port()
        config = workdir / "rclone.conf"  # an empty config: no remotes, no notice about it
        config.touch()
        self.process = Process(
            "rclone",
            [
                self.binary or "rclone",
                "serve",
                "http",
                str(root),
                "--addr",
                f"127.0.0.1:{self.port}",
                "--user",
                RCLONE_USER,
                "--pass",
                RCLONE_PASSWORD,
                "--read-only",
                "--config",
                str(config),
            ],
            workdir / "rclone.log",
            {"GOMAXPROCS": str(cores)},
        )

    @property
    def missing(self) -> str | None:
        return None if self.binary else "rclone not installed"

    @property
    def pid(self) -> int:
        return self.process.pid

    @staticmethod
    def version() -> str:
        binary = shutil.which("rclone")
        if not binary:
            return "absent"
        out = subprocess.run([binary, "version"], capture_output=True, text=True).stdout
        return out.split()[1] if out.split() else "?"

    def headers(self) -> dict[str, str]:
        pair = base64.b64encode(f"{RCLONE_USER}:{RCLONE_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    def start(self) -> None:
        self.process.start(self.port)

    def stop(self) -> None:
        self.process.stop()


class EmbeddedDefault:
    """docproxy as a sidecar runs by default: the repository's ``config.yaml`` (embedded
    catalog, local folder, one worker) with only its port and its ``./var/`` paths moved into
    ``workdir``. Started cold, as often as asked, to time its start and read its idle memory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "config.yaml"
        config = yaml.safe_load((REPO / "config.yaml").read_text())
        var = workdir / "var"
        config["server"]["port"] = self.port
        config["catalog"]["url"] = f"sqlite:///{var}/docproxy.db"
        config["storage"]["backends"]["local"]["root"] = str(var / "files")
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.process = Process(
            "docproxy-default",
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path)],
            workdir / "docproxy-default.log",
        )

    def spawn(self) -> int:
        """Start it and return at once; its pid."""
        return self.process.spawn().pid

    def exited(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is not None

    def log(self) -> str:
        return read_log(self.process.log)

    def stop(self) -> None:
        self.process.stop()
