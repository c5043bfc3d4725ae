"""Ranges, HEAD and validators on GET /download/{id} and the proxy's own links, per backend."""

from __future__ import annotations

import email.utils

import pytest

from tests.harness import assert_envelope
from tests.served import Served, random_bytes

SIZE = 3 * 1024 * 1024 + 12345  # several 1 MiB chunks and a ragged end
DATA = random_bytes(SIZE, seed=5)
NOT_SATISFIABLE = "Requested range not satisfiable"


@pytest.fixture(scope="module")
def document(served: Served) -> str:
    return served.add(DATA, "sample.txt")


def counters(served: Served) -> dict[str, int]:
    return served.reads()


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after[key] - before[key]


# (Range header, expected start, expected stop)
SATISFIABLE = [
    ("bytes=0-0", 0, 1),
    ("bytes=0-99", 0, 100),
    ("bytes=100-", 100, SIZE),
    ("bytes=-100", SIZE - 100, SIZE),
    ("bytes=-1", SIZE - 1, SIZE),
    (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE),
    (f"bytes={SIZE - 10}-{SIZE + 1000}", SIZE - 10, SIZE),  # last-pos past the end: clamped
    ("bytes=1048570-2097160", 1048570, 2097161),  # across a chunk boundary
    ("bytes=5-5", 5, 6),
    (f"bytes=-{SIZE * 2}", 0, SIZE),  # suffix longer than the object: all of it, still 206
    ("bytes=0-", 0, SIZE),  # whole object: still 206
    (f"bytes=0-{SIZE - 1}", 0, SIZE),
    ("Bytes=10-20", 10, 21),  # the unit is case-insensitive
    ("bytes= 10-20 ,", 10, 21),  # optional whitespace around list elements
    ("bytes=10-20,", 10, 21),  # empty list elements are ignored
]


@pytest.mark.parametrize(("range_header", "start", "stop"), SATISFIABLE)
def test_single_range_is_206_with_a_ranged_read(
    served, document, access, range_header, start, stop
):
    before = counters(served)
    response = served.request(document, access, headers={"range": range_header})
    after = counters(served)
    assert response.status_code == 206, response.text
    assert response.content == DATA[start:stop]
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response.headers["content-length"] == str(stop - start)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert "etag" in response.headers and "last-modified" in response.headers
    # Only the span was read from storage: a ranged read, not a read-and-discard.
    assert delta(before, after, "object_reads") == 1
    assert delta(before, after, "bytes_read") == stop - start
    whole = (start, stop) == (0, SIZE)
    assert delta(before, after, "ranged_reads") == (0 if whole else 1)
    assert delta(before, after, "sniff_reads") == 0


@pytest.mark.parametrize(
    "range_header",
    [
        f"bytes={SIZE}-",
        f"bytes={SIZE + 5}-{SIZE + 10}",
        "bytes=-0",
        "bytes=99999999999999999999999-",
        "bytes=99999999999999999999999-99999999999999999999999",
    ],
)
def test_unsatisfiable_range_is_416_in_the_envelope(served, document, access, range_header):
    before = counters(served)
    response = served.request(document, access, headers={"range": range_header})
    assert_envelope(response, 416, NOT_SATISFIABLE)
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert delta(before, counters(served), "object_reads") == 0


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=5-1",  # last before first
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes=,",
        "bytes 0-1",
        "items=0-1",  # a unit docproxy does not know
        "bytes=\xb2-5".encode("latin-1"),  # "²": str.isdigit() says yes, HTTP says no
        "bytes=0x10-20",
        "bytes=+1-2",
        "bytes=0-1,5-6",  # several ranges: the whole body (documented choice)
        "bytes=0-1,-5",
        f"bytes=0-1,{SIZE + 1}-",
    ],
)
def test_invalid_or_multiple_ranges_give_the_whole_body(served, document, access, range_header):
    before = counters(served)
    response = served.request(document, access, headers={"range": range_header})
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(SIZE)
    assert "content-range" not in response.headers
    assert response.headers["accept-ranges"] == "bytes"
    assert delta(before, counters(served), "ranged_reads") == 0


def test_full_download_advertises_ranges_and_validators(served, document, access):
    response = served.request(document, access)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"].startswith('"')
    modified = email.utils.parsedate_to_datetime(response.headers["last-modified"])
    assert modified.tzinfo is not None


def test_empty_object(served, access):
    empty = served.add(b"", "empty.txt")
    response = served.request(empty, access)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"
    ranged = served.request(empty, access, headers={"range": "bytes=0-"})
    assert_envelope(ranged, 416, NOT_SATISFIABLE)
    assert ranged.headers["content-range"] == "bytes */0"


# -- HEAD ------------------------------------------------------------------------------------

VARYING = {"date", "server", "x-request-id"}  # a request id is made per request


def test_head_has_get_headers_and_reads_nothing(served, document, access):
    get = served.request(document, access)
    before = counters(served)
    head = served.request(document, access, method="HEAD")
    after = counters(served)
    assert head.status_code == 200
    assert head.content == b""
    assert {k: v for k, v in head.headers.items() if k not in VARYING} == {
        k: v for k, v in get.headers.items() if k not in VARYING
    }
    assert delta(before, after, "object_reads") == 0
    assert delta(before, after, "bytes_read") == 0
    assert delta(before, after, "sniff_reads") == 0


def test_head_ignores_range(served, document, access):
    """Range is defined for GET only (RFC 9110 section 14.2): HEAD describes the whole object."""
    head = served.request(document, access, method="HEAD", headers={"range": "bytes=0-9"})
    assert head.status_code == 200
    assert head.headers["content-length"] == str(SIZE)
    assert "content-range" not in head.headers


def test_head_of_a_sniffed_document_reads_only_the_sniff_bytes(served, access):
    """No extension and no type: the first bytes settle the type, but no body read starts."""
    sniffed = served.add(b"%PDF-1.4\n" + random_bytes(5000, seed=9), "report")
    served.url(sniffed, access)  # POST /download resolves (and sniffs) the document too
    before = counters(served)
    head = served.request(sniffed, access, method="HEAD")
    after = counters(served)
    assert head.status_code == 200
    assert head.headers["content-type"] == "application/pdf"
    assert delta(before, after, "object_reads") == 0
    assert delta(before, after, "sniff_reads") == 1


def test_missing_document_head_is_437(served):
    response = served.request("no-such-document", "direct", method="HEAD")
    assert response.status_code == 437
    assert response.content == b""


# -- validators ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validators(served: Served, document: str) -> tuple[str, str]:
    response = served.request(document, "direct", method="HEAD")
    return response.headers["etag"], response.headers["last-modified"]


def _later(http_date: str, seconds: int) -> str:
    return email.utils.formatdate(
        email.utils.parsedate_to_datetime(http_date).timestamp() + seconds, usegmt=True
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "conditions",
    [
        lambda etag, modified: {"if-none-match": etag},
        lambda etag, modified: {"if-none-match": f'"other", {etag}'},
        lambda etag, modified: {"if-none-match": f"W/{etag}"},  # weak comparison
        lambda etag, modified: {"if-none-match": "*"},
        lambda etag, modified: {"if-modified-since": modified},
        lambda etag, modified: {"if-modified-since": _later(modified, 3600)},
        # If-None-Match wins over If-Modified-Since (RFC 9110 section 13.2.2).
        lambda etag, modified: {"if-none-match": etag, "if-modified-since": _later(modified, -9)},
        # A 304 comes before any Range.
        lambda etag, modified: {"if-none-match": etag, "range": "bytes=0-9"},
    ],
    ids=["etag", "list", "weak", "star", "ims-equal", "ims-later", "inm-over-ims", "with-range"],
)
def test_not_modified(served, document, validators, access, method, conditions):
    etag, modified = validators
    before = counters(served)
    response = served.request(document, access, method=method, headers=conditions(etag, modified))
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"] == etag
    assert "content-range" not in response.headers
    assert delta(before, counters(served), "object_reads") == 0


@pytest.mark.parametrize(
    "conditions",
    [
        lambda etag, modified: {"if-none-match": '"something-else"'},
        lambda etag, modified: {"if-none-match": "not-a-tag"},
        lambda etag, modified: {"if-modified-since": _later(modified, -3600)},
        lambda etag, modified: {"if-modified-since": "yesterday"},
        # If-None-Match present and not matching: If-Modified-Since is not looked at.
        lambda etag, modified: {"if-none-match": '"other"', "if-modified-since": modified},
    ],
    ids=["other-etag", "malformed-inm", "ims-earlier", "ims-invalid", "inm-wins"],
)
def test_modified_gives_the_body(served, document, validators, access, conditions):
    response = served.request(document, access, headers=conditions(*validators))
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.parametrize(
    ("if_range", "expect_range"),
    [
        (lambda etag, modified: etag, True),
        (lambda etag, modified: modified, True),
        (lambda etag, modified: '"stale"', False),
        (lambda etag, modified: f"W/{etag}", False),  # If-Range compares strongly
        (lambda etag, modified: _later(modified, -60), False),
        (lambda etag, modified: "garbage", False),
    ],
    ids=["etag", "date", "stale-etag", "weak-etag", "stale-date", "garbage"],
)
def test_if_range(served, document, validators, access, if_range, expect_range):
    headers = {"range": "bytes=100-199", "if-range": if_range(*validators)}
    response = served.request(document, access, headers=headers)
    if expect_range:
        assert response.status_code == 206
        assert response.content == DATA[100:200]
    else:
        assert response.status_code == 200
        assert response.content == DATA


def test_if_range_with_stale_validator_skips_an_unsatisfiable_range(served, document, access):
    headers = {"range": f"bytes={SIZE + 1}-", "if-range": '"stale"'}
    response = served.request(document, access, headers=headers)
    assert response.status_code == 200
    assert response.content == DATA


@pytest.mark.parametrize(
    "conditions",
    [
        lambda etag, modified: {"if-match": '"other"'},
        lambda etag, modified: {"if-match": f"W/{etag}"},  # If-Match compares strongly
        lambda etag, modified: {"if-unmodified-since": _later(modified, -60)},
    ],
    ids=["if-match", "if-match-weak", "if-unmodified-since"],
)
def test_failed_precondition_is_412(served, document, validators, access, conditions):
    response = served.request(document, access, headers=conditions(*validators))
    assert_envelope(response, 412, "Precondition failed")


def test_passing_preconditions_serve_the_range(served, document, validators, access):
    etag, modified = validators
    headers = {"if-match": etag, "if-unmodified-since": modified, "range": "bytes=-10"}
    response = served.request(document, access, headers=headers)
    assert response.status_code == 206
    assert response.content == DATA[-10:]


def test_a_changed_object_gets_a_new_etag(served, access):
    document_id = served.add(b"first version", "changing.txt")
    first = served.request(document_id, access)
    served.replace(document_id, b"second version!")
    second = served.request(document_id, access, headers={"if-none-match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.content == b"second version!"
    assert second.headers["etag"] != first.headers["etag"]
    stale = served.request(
        document_id, access, headers={"range": "bytes=0-4", "if-range": first.headers["etag"]}
    )
    assert stale.status_code == 200
    assert stale.content == b"second version!"
