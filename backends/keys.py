"""Normalising catalog paths into store keys without letting them climb out."""

from __future__ import annotations

import functools
from posixpath import normpath

from backends.base import InvalidKey


# Cached: a download normalises the same key several times (routing, stat, read), and hot
# documents come back again and again. Refusals are raised, so never cached.
@functools.lru_cache(maxsize=4096)
def relative_key(path: str, prefix: str = "") -> str:
    """``prefix`` + ``path`` as a clean relative key; ``..``, absolute paths and NUL are refused."""
    if not path or "\x00" in path:
        raise InvalidKey("empty key or NUL byte in key")
    if path.startswith("/") or "\\" in path:
        raise InvalidKey(f"absolute or backslashed path: {path!r}")
    parts = path.split("/")
    if any(part == ".." for part in parts):
        raise InvalidKey(f"parent reference in path: {path!r}")
    key = normpath(path)
    if key in (".", "") or key.startswith("../"):
        raise InvalidKey(f"path names no object: {path!r}")
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key
