"""Keys and secrets published in the repository: refused off loopback, warned about on it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import yaml

from proxy.config.loading import load_settings
from proxy.config.published import PUBLISHED_SHA256, is_loopback, published_keys
from tests.harness import REPO, base_config, merge, run_cli, write_config

SHIPPED_TOKEN_KEY = "local-dev-token-key-change-me"
PUBLISHED = "published keys in use ("


def shipped_values() -> set[str]:
    """Every key or secret value written in the repository's configs: config.yaml's
    ``${VAR:-default}`` defaults and literals, deploy/'s literal values and Secret data."""
    values: set[str] = set()
    configs = [REPO / "config.yaml", *sorted((REPO / "deploy").rglob("*.yaml"))]
    for path in configs:
        text = path.read_text()
        for match in re.finditer(r"^[ \t-]*(\w+):[ \t]*(\S.*?)[ \t]*$", text, re.MULTILINE):
            name, value = match.groups()
            # snake_case or UPPER_CASE names with a key or secret word, not *_env or *_ID
            # (which name a variable); values that are variable names are not secrets either.
            if not re.search(r"(?i)(^|_)(key|secret)(_|$)", name) or re.search(
                r"(?i)_env$|_id$", name
            ):
                continue
            if re.fullmatch(r"[A-Z][A-Z0-9_]+", value):
                continue
            default = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
            if default:
                values.add(default.group(1))
            elif not value.startswith(("${", "#", "|")) and "Ref" not in name:
                values.add(value.strip("'\""))
    return values


def test_every_value_the_repository_ships_is_listed():
    values = shipped_values()
    assert {SHIPPED_TOKEN_KEY, "demo-secret", "replace-me"} <= values  # the scan finds them
    for value in values:
        assert hashlib.sha256(value.encode()).hexdigest() in PUBLISHED_SHA256, value


def test_the_shipped_config_is_found_out_key_by_key():
    settings = load_settings(REPO / "config.yaml")
    assert published_keys(settings) == [
        "auth.signing_key",
        "auth.clients[0].client_secret",
        "presign.signing_key",
    ]


def test_any_key_field_is_checked_however_deep():
    @dataclass
    class Signing:
        kid: str
        key: str

    @dataclass
    class Section:
        signing_keys: tuple[Signing, ...]
        account_key: str
        key_prefix: str = "replace-me"  # not a key: a name

    found = published_keys(Section((Signing("a", "own-key"), Signing("b", "replace-me")), "x"))
    assert found == ["signing_keys[1].key"]


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "docs.example.com"]))


def test_serve_refuses_published_keys_off_loopback(tmp_path):
    config = merge(base_config(tmp_path), {"auth": {"signing_key": SHIPPED_TOKEN_KEY}})
    path = write_config(tmp_path / "config.yaml", config)
    result = run_cli(path, "serve", "--host", "0.0.0.0", "--port", "0", check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("docproxy: the config is invalid:")
    assert f"{PUBLISHED}auth.signing_key)" in result.stderr


def test_serve_on_loopback_warns_once(make_service):
    secret = {"client_id": "demo-client", "client_secret": "demo-secret"}
    service = make_service({"auth": {"signing_key": SHIPPED_TOKEN_KEY, "clients": [secret]}})
    log = service.log()
    assert log.count(PUBLISHED) == 1
    warning = next(line for line in log.splitlines() if PUBLISHED in line)
    assert warning.startswith("WARNING")
    assert "auth.signing_key, auth.clients[0].client_secret)" in warning


def test_check_config_warns_and_passes(tmp_path):
    config = merge(base_config(tmp_path), {"presign": {"signing_key": "replace-me-" * 2}})
    path = write_config(tmp_path / "own.yaml", config)
    assert PUBLISHED not in run_cli(path, "check-config").stderr
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    config = merge(base_config(tmp_path), {"presign": shipped["presign"]})
    path = write_config(tmp_path / "shipped-link-key.yaml", config)
    result = run_cli(path, "check-config")
    assert result.returncode == 0
    assert f"docproxy: warning: {PUBLISHED}presign.signing_key)" in result.stderr
