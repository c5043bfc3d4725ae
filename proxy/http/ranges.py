"""The ``Range`` request header (RFC 9110 section 14): one byte range, or the whole body.

docproxy answers a single range with 206 and ignores a header it cannot use, as the RFC allows:
a syntactically invalid header, another unit, and a request for several ranges all get the whole
body with 200 (several ranges would need ``multipart/byteranges``, which download clients do not
need and which would turn one ranged read into many).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

# ASCII digits only: str.isdigit() would accept "²" or Arabic-Indic digits.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
# A position longer than this cannot address any object; it is read as "past the end".
_MAX_DIGITS = 19


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``[start, stop)`` of an object of ``size`` bytes; never empty."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


class RangeOutcome(enum.Enum):
    UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """One range-spec as written: ``first-last``, ``first-`` or the suffix ``-length``."""

    first: int | None
    last: int | None


def _position(digits: str) -> int:
    # Anything longer than 19 digits is beyond every object; cap it instead of parsing it.
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def list_elements(value: str) -> Iterator[str]:
    """The elements of a header list (RFC 9110 section 5.6.1): separated by commas with optional
    whitespace; empty elements are to be accepted and ignored."""
    for element in value.split(","):
        element = element.strip(" \t")
        if element:
            yield element


def parse_range_header(value: str) -> list[RangeSpec] | None:
    """The byte range-specs of a ``Range`` value, or None when it is not a valid bytes range."""
    unit, sep, range_set = value.partition("=")
    if not sep or unit.strip(" \t").lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    for element in list_elements(range_set):
        match = _SPEC.fullmatch(element)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if first:
            spec = RangeSpec(_position(first), _position(last) if last else None)
            if spec.last is not None and spec.last < spec.first:
                return None
        elif last:
            spec = RangeSpec(None, _position(last))
        else:
            return None  # a bare "-"
        specs.append(spec)
    return specs or None


def resolve_spec(spec: RangeSpec, size: int) -> ByteRange | None:
    """Absolute offsets for one spec, or None when it asks for nothing inside the object."""
    if spec.first is None:
        # Suffix range: the last N bytes, all of them when N exceeds the size. Resolved here so
        # that no backend ever sees a suffix form (some stores answer it wrongly).
        length = min(spec.last or 0, size)
        if length <= 0:
            return None
        return ByteRange(size - length, size, size)
    if spec.first >= size:
        return None
    stop = size if spec.last is None else min(spec.last + 1, size)
    return ByteRange(spec.first, stop, size)


def evaluate_range(value: str | None, size: int) -> ByteRange | RangeOutcome | None:
    """What to send for a ``Range`` header on an object of ``size`` bytes.

    None: the whole body with 200 (no header, an invalid one, or several ranges). A ByteRange:
    that span with 206, even when it covers the whole object. UNSATISFIABLE: 416.
    """
    if value is None:
        return None
    specs = parse_range_header(value)
    if specs is None or len(specs) != 1:
        return None
    return resolve_spec(specs[0], size) or RangeOutcome.UNSATISFIABLE
