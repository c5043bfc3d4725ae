"""config.yaml: the shipped file as is, check-config's messages, how serve is pointed at it."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from proxy.config.loading import load_settings
from proxy.config.settings import ConfigError, parse_settings, single_key
from tests.conftest import require_server
from tests.harness import REPO, base_config, free_port, merge, write_config
from tests.samples import pdf_bytes

SHIPPED = REPO / "config.yaml"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any DOCPROXY_* setting, so the shipped defaults apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPROXY_")}
    env["PYTHONPATH"] = str(REPO)  # run this checkout's code from any working directory
    env.update(extra)
    return env


def docproxy(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        timeout=timeout,
    )


@contextmanager
def serving(*args: str, port: int, cwd: Path = REPO, env: Mapping[str, str] | None = None,
            log: Path) -> Iterator[str]:  # fmt: skip
    """``docproxy serve ARGS`` until the block ends; yields its base URL once it answers."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve did not answer:\n{log.read_text()}"
            time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the shipped config.yaml -------------------------------------------------------------------


def test_shipped_config_defaults(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DOCPROXY_"):
            monkeypatch.delenv(name)
    settings = load_settings(SHIPPED)
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.catalog.embedded and settings.catalog.url == "sqlite:///./var/docproxy.db"
    assert settings.catalog.tenant_rule == "auto"
    assert settings.auth.algorithm == "HS256" and settings.auth.token_ttl == 3600
    assert settings.presign.ttl == 3600
    [client] = settings.auth.clients
    assert client.client_id == "demo-client"
    assert client.secret_sha256 == hashlib.sha256(b"demo-secret").digest()
    [local] = settings.storage.backends
    assert (local.name, local.protocol) == ("local", "file")
    assert str(local.options.root) == "var/files" and local.options.chunk_size == 1024 * 1024
    assert settings.download.cache_control == "no-cache"


def test_shipped_config_reads_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("DOCPROXY_DEMO_CLIENT_SECRET", "from-the-environment")
    monkeypatch.setenv("DOCPROXY_TOKEN_KEY", "token-key-from-the-environment")
    settings = load_settings(SHIPPED)
    assert settings.auth.clients[0].secret_sha256 == (
        hashlib.sha256(b"from-the-environment").digest()
    )
    assert settings.auth.signing_keys == single_key("token-key-from-the-environment")


def test_shipped_config_serves_as_is_from_a_fresh_directory(tmp_path):
    """The README's first run: config.yaml in the current directory, nothing else there."""
    shutil.copy(SHIPPED, tmp_path / "config.yaml")
    port = free_port()
    assert docproxy("check-config", cwd=tmp_path).returncode == 0
    with serving(
        "--port", str(port), port=port, cwd=tmp_path, log=tmp_path / "serve.log"
    ) as base_url:
        assert (tmp_path / "var" / "docproxy.db").is_file()
        assert (tmp_path / "var" / "files").is_dir()
        (tmp_path / "hello.txt").write_bytes(b"hello from the shipped config")
        added = docproxy("documents", "add", "hello.txt", "--id", "hello", cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        token = httpx.post(
            f"{base_url}/generate-client-auth-token",
            json={"client_id": "demo-client", "client_secret": "demo-secret",
                  "fingerprint": "f", "user": {"email": "a@b.c", "group_name": "g"}},
        ).json()["data"]["access_token"]  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        response = httpx.get(f"{base_url}/download/hello", headers=auth)
        assert response.content == b"hello from the shipped config"
        link = httpx.post(f"{base_url}/download", headers=auth, json={"document_id": "hello"})
        assert link.json()["data"]["download_url"].startswith(f"{base_url}/links/hello?")
        assert httpx.get(link.json()["data"]["download_url"]).status_code == 200
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def readme_walk_through() -> str:
    """The shell blocks of the README's curl walk-through, joined into one script."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A walk-through with curl", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL))


def test_readme_walk_through_works_as_pasted(tmp_path):
    """The README's curl walk-through, run by bash against the shipped config in a fresh folder;
    only the port differs (a free one instead of 8080)."""
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            require_server(tool, "not on PATH (the walk-through uses it)")
    home = tmp_path / "home"
    home.mkdir()
    report = pdf_bytes(3000)
    (home / "report.pdf").write_bytes(report)
    bin_dir = tmp_path / "bin"  # "docproxy" runs this checkout, as pip's entry point would
    bin_dir.mkdir()
    (bin_dir / "docproxy").write_text(f'#!/bin/sh\nexec {sys.executable} -m proxy "$@"\n')
    (bin_dir / "docproxy").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(SHIPPED, work / "config.yaml")
    port = free_port()
    script = readme_walk_through().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    env = clean_env(HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
    with serving("--port", str(port), port=port, cwd=work, env=env, log=tmp_path / "serve.log"):
        result = subprocess.run(
            ["bash", "-e", "-c", script], capture_output=True, text=True, cwd=work, env=env,
            timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert (work / "my-document.pdf").read_bytes() == report  # curl -OJ on the presigned link
    assert (work / "document.pdf").read_bytes() == report  # the direct download
    assert "HTTP/1.1 200 OK" in output
    assert 'content-disposition: attachment; filename="my-document.pdf"' in output
    # Every answer the walk-through shows for an error is printed as shown.
    shown = re.findall(r'^# (\{"statusCode":4\d\d.*)$', script, re.MULTILINE)
    assert len(shown) == 4 and all(line in output for line in shown), result.stdout
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


# --- check-config and serve on bad configs -----------------------------------------------------


BAD_CONFIG = {
    "servr": {},
    "server": {"port": "abc", "workers": 0, "log_level": "loud"},
    "auth": {
        "signing_key": "${DOCPROXY_TEST_SURELY_UNSET_VARIABLE}",
        "algorithm": "RS256",
        "token_ttl": -5,
        "max_failed_logins": -1,
        "failed_login_window": 0,
        "clients": [
            {"client_id": "a", "client_secret": "x", "secret": "typo"},
            {"client_secret": "y"},
            {"client_id": "b", "client_secret_sha256": "nothex"},
            {"client_id": "c"},
        ],
    },
    "presign": {"ttl": "soon", "signing_key": "short"},
    "catalog": {"url": "mongodb://x", "tenant_rule": "maybe", "embedded": "yes"},
    "storage": {
        "default": "nowhere",
        "backends": {
            "local": {"protocol": "file", "chunk_size": "lots", "creat_root": True},
            "cloud": {"protocol": "ftp"},
        },
    },
    "download": {"sniff_bytes": -1, "sendfile_in_flight": "plenty", "extra": 1},
}
EXPECTED_PROBLEMS = [
    "servr: unknown key",
    "server.port: must be an integer, not str",
    "server.workers: must be at least 1 (got 0)",
    "server.log_level: must be one of critical, error, warning, info, debug (got 'loud')",
    "auth.signing_key: environment variable DOCPROXY_TEST_SURELY_UNSET_VARIABLE is not set",
    "auth.algorithm: must be one of HS256, HS384, HS512 (got 'RS256')",
    "auth.token_ttl: must be at least 1 (got -5)",
    "auth.max_failed_logins: must be at least 0 (got -1)",
    "auth.failed_login_window: must be at least 1 (got 0)",
    "auth.clients[0].secret: unknown key",
    "auth.clients[1].client_id: required",
    "auth.clients[2].client_secret_sha256: must be 64 hex digits",
    "auth.clients[3]: give exactly one of client_secret or client_secret_sha256",
    "presign.ttl: must be an integer, not str",
    "presign.signing_key: must be at least 16 bytes long",
    "catalog.url: must be a sqlite:///path, postgresql://user@host/db or mysql://user@host/db"
    " URL (got scheme 'mongodb')",
    "catalog.embedded: must be true or false, not 'yes'",
    "catalog.tenant_rule: must be one of auto, on, off (got 'maybe')",
    "storage.backends.local.root: required",
    "storage.backends.local.chunk_size: must be a byte size such as 1048576 or '1MiB' (got 'lots')",
    "storage.backends.local.creat_root: unknown key",
    "storage.backends.cloud.protocol: must be one of ",
    "storage.default: names no backend under storage.backends (got 'nowhere')",
    "download.sniff_bytes: must be at least 0 (got -1)",
    "download.sendfile_in_flight: must be a byte size such as 1048576 or '1MiB' (got 'plenty')",
    "download.extra: unknown key",
]


def assert_names_every_problem(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == "docproxy: the config is invalid:"
    for expected in EXPECTED_PROBLEMS:
        assert any(line.strip().startswith(expected) for line in lines), (expected, lines)


def test_check_config_names_every_bad_key(tmp_path):
    path = write_config(tmp_path / "bad.yaml", BAD_CONFIG)
    assert_names_every_problem(docproxy("check-config", "--config", str(path)))


def test_serve_refuses_a_bad_config_with_the_same_messages(tmp_path):
    path = write_config(tmp_path / "bad.yaml", BAD_CONFIG)
    checked = docproxy("check-config", "--config", str(path))
    served = docproxy("serve", "--config", str(path), "--port", str(free_port()), timeout=30)
    assert_names_every_problem(served)
    assert served.stderr == checked.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: [\n", "not valid YAML at line 2, column 1"),
        ("- a\n- b\n", "must be a mapping of sections (server, auth, ...), not a list"),
        ("just a string\n", "must be a mapping of sections (server, auth, ...), not a str"),
        ("", "storage.backends: at least one backend is required"),
        ("server: 5\n", "server: must be a mapping"),
    ],
    ids=["broken-yaml", "list", "scalar", "empty", "section-not-mapping"],
)
def test_unusable_files_are_named(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = docproxy("check-config", "--config", str(path))
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path):
    result = docproxy("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode != 0
    assert f"{tmp_path / 'absent.yaml'}: cannot read config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_accepts_a_good_config(tmp_path):
    path = write_config(tmp_path / "good.yaml", base_config(tmp_path))
    result = docproxy("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK (backends: local (file); default: local)"


def test_serve_that_cannot_open_its_store_fails_without_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    config = merge(
        base_config(tmp_path), {"storage": {"backends": {"local": {"root": str(blocker / "x")}}}}
    )
    path = write_config(tmp_path / "config.yaml", config)
    result = docproxy("serve", "--config", str(path), "--port", str(free_port()), timeout=30)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "docproxy cannot start: NotADirectoryError" in output
    assert "Traceback" not in output


# --- pointing serve at a config and an address -------------------------------------------------


def test_docproxy_config_environment_variable(tmp_path):
    path = write_config(tmp_path / "elsewhere.yaml", base_config(tmp_path))
    env = clean_env(DOCPROXY_CONFIG=str(path))
    result = docproxy("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: OK")
    # --config wins over the environment.
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a config\n")
    overridden = docproxy("check-config", "--config", str(path), env=clean_env(
        DOCPROXY_CONFIG=str(bad)))  # fmt: skip
    assert overridden.returncode == 0
    port = free_port()
    with serving(
        "--port", str(port), port=port, env=env, cwd=tmp_path, log=tmp_path / "s.log"
    ) as url:
        assert httpx.get(f"{url}/healthz").json()["data"]["status"] == "ok"


def test_host_and_port_flags_override_the_config(tmp_path):
    # 203.0.113.7 (TEST-NET-3) is not an address of this machine: binding it would fail.
    port = free_port()
    config = merge(base_config(tmp_path), {"server": {"host": "203.0.113.7", "port": 1}})
    path = write_config(tmp_path / "config.yaml", config)
    args = ("--config", str(path), "--host", "127.0.0.1", "--port", str(port))
    with serving(*args, port=port, log=tmp_path / "s.log") as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
    assert f"Uvicorn running on http://127.0.0.1:{port}" in (tmp_path / "s.log").read_text()


def test_server_port_from_the_config(tmp_path):
    port = free_port()
    config = merge(base_config(tmp_path), {"server": {"port": port}})
    path = write_config(tmp_path / "config.yaml", config)
    with serving("--config", str(path), port=port, log=tmp_path / "s.log") as url:
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_config_option_before_the_command(tmp_path):
    path = write_config(tmp_path / "config.yaml", base_config(tmp_path))
    result = docproxy("--config", str(path), "check-config")
    assert result.returncode == 0 and result.stdout.startswith(f"{path}: OK")


def test_load_settings_raises_config_error_not_yaml_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("auth: {signing_key: [\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert len(caught.value.problems) == 1


@pytest.mark.parametrize(
    ("presign", "margin"),
    [
        ({"ttl": 3600}, 60),
        ({"ttl": 300}, 30),
        ({"ttl": 5}, 0),  # a short validity is not eaten by reuse
        ({"ttl": 300, "reuse_margin": 100}, 100),
        ({"ttl": 3600, "reuse_margin": 0}, 0),
    ],
)
def test_presign_reuse_margin_defaults_to_a_tenth_of_the_ttl_at_most(tmp_path, presign, margin):
    path = write_config(tmp_path / "c.yaml", merge(base_config(tmp_path), {"presign": presign}))
    assert load_settings(path).presign.reuse_margin == margin


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"redis_url": "http://127.0.0.1:6379"}, "state.redis_url: must be a redis://"),
        ({"key_prefix": []}, "state.key_prefix: must be a string, not list"),
        ({"redis": "x"}, "state.redis: unknown key"),
    ],
)
def test_state_keys_are_checked(tmp_path, state, problem):
    config = merge(base_config(tmp_path), {"state": state})
    with pytest.raises(ConfigError) as caught:
        parse_settings(config)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"downloads_per_minute": 0}, "limits.downloads_per_minute: must be at least 1"),
        ({"presigns_per_minute": "5"}, "limits.presigns_per_minute: must be an integer"),
    ],
)
def test_limits_keys_are_checked(tmp_path, limits, problem):
    config = merge(base_config(tmp_path), {"limits": limits})
    with pytest.raises(ConfigError) as caught:
        parse_settings(config)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
