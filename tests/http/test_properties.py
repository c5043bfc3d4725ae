"""Property tests: the Range parser, the validators and the Content-Disposition encoder never
raise on any input and never produce a header a client could misread."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from backends.base import ObjectInfo
from proxy.client.fetch import filename_from
from proxy.common.filenames import clean_filename
from proxy.documents.disposition import content_disposition
from proxy.http.conditional import Validators, parse_http_date, select_response, store_entity_tag
from proxy.http.errors import PreconditionFailed, RangeNotSatisfiable
from proxy.http.ranges import ByteRange, RangeOutcome, evaluate_range, parse_range_header

sizes = st.integers(min_value=0, max_value=2**63)
positions = st.integers(min_value=0, max_value=2**64)
# Strings made of what Range values are made of, so that many of them are nearly valid.
range_like = st.text(alphabet="bytesBYTES=0123456789-,; \t\u00b2\u0663x+", max_size=40)
any_range = st.one_of(range_like, st.text(max_size=60))
header_safe = re.compile(r"[\x20-\x7e]*")


def check_outcome(outcome: object, size: int) -> None:
    assert (
        outcome is None or outcome is RangeOutcome.UNSATISFIABLE or isinstance(outcome, ByteRange)
    )
    if isinstance(outcome, ByteRange):
        assert 0 <= outcome.start < outcome.stop <= size
        assert outcome.size == size
        assert header_safe.fullmatch(outcome.content_range())
        assert outcome.content_range() == f"bytes {outcome.start}-{outcome.stop - 1}/{size}"


@given(any_range, sizes)
@example("bytes=0-", 0)
@example("bytes=-0", 10)
@example("bytes=\u0663-5", 10)
@example("bytes=1" + "0" * 400 + "-", 10)
def test_any_range_string_gives_an_outcome_and_never_raises(value, size):
    check_outcome(evaluate_range(value, size), size)


@given(positions, st.one_of(st.none(), positions), sizes)
def test_first_last_ranges_match_the_rfc(first, last, size):
    value = f"bytes={first}-{'' if last is None else last}"
    outcome = evaluate_range(value, size)
    if last is not None and last < first:
        assert outcome is None  # invalid: ignored, the whole body
    elif first >= size:
        assert outcome is RangeOutcome.UNSATISFIABLE
    else:
        stop = size if last is None else min(last + 1, size)
        assert outcome == ByteRange(first, stop, size)


@given(positions, sizes)
def test_suffix_ranges_are_resolved_to_absolute_offsets(length, size):
    outcome = evaluate_range(f"bytes=-{length}", size)
    if length == 0 or size == 0:
        assert outcome is RangeOutcome.UNSATISFIABLE
    else:
        assert outcome == ByteRange(size - min(length, size), size, size)


@given(st.lists(st.tuples(positions, positions), min_size=2, max_size=5), sizes)
def test_several_ranges_give_the_whole_body(pairs, size):
    value = "bytes=" + ",".join(f"{a}-{a + b}" for a, b in pairs)
    assert len(parse_range_header(value) or []) == len(pairs)
    assert evaluate_range(value, size) is None


latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=60)
header_names = st.sampled_from(
    ["range", "if-range", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since"]
)


@given(
    st.dictionaries(header_names, latin1_text, max_size=6),
    st.sampled_from(["GET", "HEAD"]),
    sizes,
    st.one_of(st.none(), latin1_text),
    st.one_of(st.none(), st.floats(min_value=0, max_value=2**33)),
)
def test_conditional_selection_never_raises_anything_else(headers, method, size, etag, modified):
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    validators = Validators.of(ObjectInfo(size=size, etag=etag, modified=modified))
    for value in validators.headers().values():
        assert header_safe.fullmatch(value)
    try:
        selection = select_response(method, Headers(raw=raw), validators, size)
    except RangeNotSatisfiable as exc:
        assert exc.headers["content-range"] == f"bytes */{size}"
        return
    except PreconditionFailed:
        return
    assert selection.status in (200, 206, 304)
    assert (selection.byte_range is not None) == (selection.status == 206)
    if selection.byte_range is not None:
        check_outcome(selection.byte_range, size)


@given(st.text(max_size=80))
def test_any_store_etag_becomes_a_safe_entity_tag(raw):
    tag = store_entity_tag(raw)
    if tag is not None:
        assert re.fullmatch(r'(W/)?"[\x21\x23-\x7e]+"', str(tag))


@given(st.text(max_size=60))
@example("Sun, 06 Nov 1994 08:49:37 GMT")
@example("Sun Nov  6 08:49:37 99999")
def test_any_date_string_parses_or_is_none(value):
    parsed = parse_http_date(value)
    assert parsed is None or isinstance(parsed, int)


@given(st.text(max_size=300))
@example("\r\nSet-Cookie: a=b")
@example('evil"; filename="x.exe')
@example("../../etc/passwd")
@example("\u202eexe.pdf")
@example("")
def test_content_disposition_is_a_safe_header_for_any_name(name):
    header = content_disposition(name)
    assert header_safe.fullmatch(header), header  # ASCII, no CR, LF or other control
    match = re.fullmatch(
        r'attachment; filename="((?:[^"\\])*)"(; filename\*=UTF-8\'\'(\S+))?', header
    )
    assert match, header
    # What a client decodes is the name docproxy meant, whatever the name was.
    assert filename_from(header, "fallback") == clean_filename(name)
