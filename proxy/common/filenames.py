"""The file name a download is saved as, whoever picks it: the server for Content-Disposition,
``docproxy fetch`` for what a server sent."""

from __future__ import annotations

import posixpath
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME = 200


def clean_filename(name: str) -> str:
    """The name a client should save as: no path, no control characters, never empty.

    Only ``/`` separates folders: a backslash is a character of the name, but Windows would
    read it as a separator, so it becomes ``_`` (``back\\slash.pdf`` -> ``back_slash.pdf``).
    """
    name = _CONTROL.sub("", name.replace("\\", "_"))
    name = posixpath.basename(name).strip().strip(".") or ""
    if len(name) > _MAX_NAME:
        stem, ext = posixpath.splitext(name)
        name = stem[: _MAX_NAME - len(ext)] + ext
    return name or "download"
