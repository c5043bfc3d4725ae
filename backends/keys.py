"""Normalising catalog paths into store keys without letting them climb out."""

from __future__ import annotations

import functools
import re
from posixpath import normpath
from urllib.parse import unquote

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


# What a URL path may hold unescaped (RFC 3986 ``pchar`` and ``/``), besides ``%XX`` escapes.
_URL_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def url_path_key(path: str) -> str:
    """The object key that the path of a full catalog URL (``s3://bucket/<path>``) names.

    The path is the key as stored unless it is plainly percent-encoded: it holds a ``%XX``
    escape, every ``%`` begins one, every other character may stand unescaped in a URL path,
    and the escapes decode as UTF-8. Then it is decoded once. A space, ``#``, ``?``, a
    non-ASCII letter or a lone ``%`` can only be part of a raw key, so such a path is taken
    as written; ``+`` is a plus either way.
    """
    if "%" not in path:
        return path
    unescaped = _ESCAPE.sub("", path)
    if "%" in unescaped or not _URL_PATH_CHARACTERS.fullmatch(unescaped):
        return path
    try:
        return unquote(path, errors="strict")
    except UnicodeDecodeError:
        return path
