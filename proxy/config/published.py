"""Keys and secrets anyone can read in docproxy's repository (the shipped config.yaml's
defaults, the deployment examples' placeholders): SHA-256 digests only, and the check that
finds them in a loaded config, wherever a key or secret sits in it."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterator
from typing import Any

# sha256 of each published value; tests/config/test_published.py keeps this list in step with
# the files that ship them.
PUBLISHED_SHA256 = frozenset(
    {
        # config.yaml: auth.signing_key, presign.signing_key, the demo client's secret
        "a54829a7a59f4a4c499eeb0670de1e36508296e6b728a8da55e83e146c62a00b",
        "bd93b0310c37a7c56f778b30bdc9c2cfd069f144b099793dd2db4d8c314e1cd2",
        "cd577fe2561ebff23505db0bb006300c7cdecbd46bc0e03c449afafaca2c25bf",
        # deploy/kubernetes/secret.yaml: "replace-me"
        "1df4b07d05b9b3b1115b4b6b22af319a2f99564a2fa2573a34896063c7513c10",
    }
)
# Fields kept as digests, and the config key that gave them.
_DIGEST_FIELDS = {"secret_sha256": "client_secret"}


def _is_secret_field(name: str) -> bool:
    return name in ("key", "secret") or name.endswith(("_key", "_secret"))


def _secrets(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key path, sha256 hex) of every key or secret under ``value``, a settings object."""
    if isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            # A storage backend is a mapping entry in the file: its path is its name.
            if hasattr(item, "options") and hasattr(item, "name"):
                yield from _secrets(item.options, f"{path}.{item.name}")
            else:
                yield from _secrets(item, f"{path}[{index}]")
        return
    if not dataclasses.is_dataclass(value):
        return
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        where = f"{path}.{f.name}" if path else f.name
        if isinstance(item, str) and _is_secret_field(f.name):
            # A signing key knows the path the file gave it (single or list form).
            yield getattr(value, "key_path", "") or where, hashlib.sha256(item.encode()).hexdigest()
        elif isinstance(item, bytes) and f.name in _DIGEST_FIELDS:
            yield f"{path}.{_DIGEST_FIELDS[f.name]}", item.hex()
        else:
            yield from _secrets(item, where)


def published_keys(settings: Any) -> list[str]:
    """The key paths of ``settings`` whose value is published in docproxy's repository."""
    return [path for path, digest in _secrets(settings, "") if digest in PUBLISHED_SHA256]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def published_warning(paths: list[str]) -> str:
    # No "name: value" shape: the log's credential filter would blank what follows the name.
    return (
        f"published keys in use ({', '.join(paths)}): their values ship in docproxy's "
        "repository, so anyone can mint tokens or links with them; set your own"
    )
