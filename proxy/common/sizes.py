"""Byte counts as people write them: ``1048576``, ``64k``, ``512 KiB``, ``1MiB``, ``2G``."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int | None:
    """The byte count ``text`` names (K, M and G are powers of 1024), or None."""
    match = _SIZE.match(text)
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()[:1]]
