"""Validators and conditional requests (RFC 9110 sections 8.8 and 13) for downloads.

``select_response`` decides, from the request's method and headers and the object's size and
validators, what a download answers: 200, 206 with one range, 304, or (raised) 412 / 416. The
preconditions are evaluated in the RFC's order (section 13.2.2): If-Match, If-Unmodified-Since,
If-None-Match, If-Modified-Since, then If-Range and Range.
"""

from __future__ import annotations

import email.utils
import functools
import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from backends.base import ObjectInfo
from proxy.http.errors import PreconditionFailed, RangeNotSatisfiable
from proxy.http.ranges import ByteRange, RangeOutcome, evaluate_range, list_elements

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E (obs-text left out).
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"')
_NOT_ETAGC = re.compile(r"[^\x21\x23-\x7e]")


@dataclass(frozen=True, slots=True)
class EntityTag:
    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'

    def weak_match(self, other: EntityTag) -> bool:
        return self.opaque == other.opaque

    def strong_match(self, other: EntityTag) -> bool:
        return not self.weak and not other.weak and self.opaque == other.opaque


# Cached: every download of a hot document parses the same ETag again.
@functools.lru_cache(maxsize=4096)
def store_entity_tag(raw: str) -> EntityTag | None:
    """The store's ETag as a well-formed entity-tag (stores differ in quoting), or None."""
    raw = raw.strip()
    weak = raw.startswith("W/")
    opaque = _NOT_ETAGC.sub("", raw.removeprefix("W/").strip('"'))
    return EntityTag(opaque, weak) if opaque else None


@dataclass(frozen=True, slots=True)
class Validators:
    """The object's ETag and Last-Modified (whole seconds, as HTTP dates carry)."""

    etag: EntityTag | None
    modified: int | None

    @classmethod
    def of(cls, info: ObjectInfo) -> Validators:
        modified = int(info.modified) if info.modified is not None else None
        etag = store_entity_tag(info.etag) if info.etag else None
        if etag is None and info.modified is not None:
            # No tag from the store: a strong one from size and modification time.
            etag = EntityTag(f"{info.size:x}-{int(info.modified * 1_000_000):x}")
        return cls(etag, modified)

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.etag is not None:
            headers["etag"] = str(self.etag)
        if self.modified is not None:
            headers["last-modified"] = http_date(self.modified)
        return headers

    def not_modified_headers(self) -> dict[str, str]:
        """What a 304 repeats (RFC 9110 section 15.4.5): the ETag, else Last-Modified."""
        if self.etag is not None:
            return {"etag": str(self.etag)}
        return self.headers()


@functools.lru_cache(maxsize=4096)
def http_date(seconds: int) -> str:
    # Cached: formatting a date is slow next to a look-up, and hot documents repeat theirs.
    return email.utils.formatdate(seconds, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch of an IMF-fixdate, RFC 850 or asctime date; None if invalid."""
    try:
        parsed = email.utils.parsedate_tz(value)
        return int(email.utils.mktime_tz(parsed)) if parsed is not None else None
    except (ValueError, OverflowError, TypeError):
        return None


def parse_entity_tags(value: str) -> list[EntityTag] | None:
    """The entity-tags of an If-Match / If-None-Match list; None when it is not one."""
    tags = []
    for element in list_elements(value):
        match = _ENTITY_TAG.fullmatch(element)
        if match is None:
            return None
        tags.append(EntityTag(match.group(2), weak=match.group(1) is not None))
    return tags


@dataclass(frozen=True, slots=True)
class Selection:
    """What a download sends: 200 whole, 206 ``byte_range``, or 304 with no body."""

    status: int
    byte_range: ByteRange | None = None


_WHOLE = Selection(200)
# The request headers that can make a download anything but a plain 200 (If-Range only
# matters beside Range).
_CONDITIONAL = frozenset(
    (b"if-match", b"if-unmodified-since", b"if-none-match", b"if-modified-since", b"range")
)


def _field(headers: Headers, name: str) -> str | None:
    values = headers.getlist(name)
    return ", ".join(values) if values else None


def _if_match_fails(value: str, current: EntityTag | None) -> bool:
    if value.strip() == "*":
        return False  # the object exists
    tags = parse_entity_tags(value)
    return not (current is not None and tags and any(t.strong_match(current) for t in tags))


def _if_none_match_matches(value: str, current: EntityTag | None) -> bool:
    if value.strip() == "*":
        return True
    tags = parse_entity_tags(value)
    return bool(current is not None and tags and any(t.weak_match(current) for t in tags))


def _if_range_holds(value: str, validators: Validators) -> bool:
    value = value.strip()
    if value.startswith(('"', 'W/"')):
        tags = parse_entity_tags(value)
        if not tags or len(tags) != 1 or validators.etag is None:
            return False
        return tags[0].strong_match(validators.etag)
    date = parse_http_date(value)
    return date is not None and validators.modified is not None and date == validators.modified


def select_response(method: str, headers: Headers, validators: Validators, size: int) -> Selection:
    """Decide 200 / 206 / 304, or raise PreconditionFailed (412) / RangeNotSatisfiable (416)."""
    if _CONDITIONAL.isdisjoint([name for name, _ in headers.raw]):
        return _WHOLE  # most downloads: one pass over the names instead of five look-ups
    if_match = _field(headers, "if-match")
    if if_match is not None:
        if _if_match_fails(if_match, validators.etag):
            raise PreconditionFailed()
    else:
        since = _field(headers, "if-unmodified-since")
        date = parse_http_date(since) if since is not None else None
        if date is not None and validators.modified is not None and validators.modified > date:
            raise PreconditionFailed()

    if_none_match = _field(headers, "if-none-match")
    if if_none_match is not None:
        if _if_none_match_matches(if_none_match, validators.etag):
            return Selection(304)
    else:
        since = _field(headers, "if-modified-since")
        date = parse_http_date(since) if since is not None else None
        if date is not None and validators.modified is not None and validators.modified <= date:
            return Selection(304)

    # Range is defined for GET only (RFC 9110 section 14.2): HEAD describes the whole object.
    range_value = _field(headers, "range")
    if method != "GET" or range_value is None:
        return Selection(200)
    if_range = _field(headers, "if-range")
    if if_range is not None and not _if_range_holds(if_range, validators):
        return Selection(200)  # the client's copy is stale: send all of the current one
    outcome = evaluate_range(range_value, size)
    if outcome is RangeOutcome.UNSATISFIABLE:
        raise RangeNotSatisfiable(
            headers={"content-range": f"bytes */{size}", "accept-ranges": "bytes"}
        )
    if outcome is None:
        return Selection(200)
    return Selection(206, outcome)
