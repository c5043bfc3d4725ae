"""How a JSON audit event reaches stderr: orjson's bytes written under the text stream when it
writes through (as stderr does), in order with the text written around it; else as text. On a
running event loop, events are held a few milliseconds and written together, and docproxy's own
lines still follow the events made before them."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from proxy.http import audit
from proxy.runtime.logging import (
    HOLD_SECONDS,
    HeldLines,
    JsonFormatter,
    OrderedStreamHandler,
    logger,
)


class Writes(io.RawIOBase):
    """A raw stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


@pytest.fixture
def use_stream():
    saved = logger.handlers, logger.propagate, audit._handler, audit._alone, audit._as_json

    def use(stream) -> None:
        handler = OrderedStreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger.handlers, logger.propagate = [handler], False
        audit.enable(True, "json", handler)

    yield use
    logger.handlers, logger.propagate = saved[0], saved[1]
    audit._handler, audit._alone, audit._as_json = saved[2], saved[3], saved[4]
    audit.enable(False)


def test_through_a_written_through_stream_an_event_is_one_write_of_bytes(use_stream):
    raw = Writes()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # as stderr's
    use_stream(stream)
    assert audit._utf8_bytes_of(stream) is raw  # the bytes go there, not through the text
    stream.write("before\n")
    audit.record("presign", "presigned URL", {"document": "é", "size": 2**70})
    stream.write("after\n")
    assert raw.writes[0] == b"before\n" and raw.writes[2] == b"after\n"
    assert len(raw.writes) == 3 and raw.writes[1].endswith(b"}\n")
    event = json.loads(raw.writes[1])
    assert event["document"] == "é" and event["size"] == 2**70  # beyond orjson: as text
    assert event["logger"] == "docproxy.audit" and event["event"] == "presign"


def test_a_stream_that_holds_text_back_is_written_as_text(use_stream):
    stream = io.StringIO()
    use_stream(stream)
    assert audit._utf8_bytes_of(stream) is None
    audit.record("presign", "presigned URL", {"document": "a"})
    audit.record("presign", "presigned URL", {"document": "b"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["document"] for line in lines] == ["a", "b"]


def test_on_the_event_loop_events_are_held_then_written_at_once_and_in_order(use_stream):
    raw = Writes()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    use_stream(stream)

    async def two_events() -> list[bytes]:
        audit.record("presign", "presigned URL", {"document": "a"})
        await asyncio.sleep(0)
        audit.record("presign", "presigned URL", {"document": "b"})
        held = list(raw.writes)
        await asyncio.sleep(HOLD_SECONDS * 4)
        return held

    assert asyncio.run(two_events()) == []
    assert len(raw.writes) == 1
    assert [json.loads(line)["document"] for line in raw.writes[0].splitlines()] == ["a", "b"]

    async def with_a_line_between() -> None:
        audit.record("presign", "presigned URL", {"document": "c"})
        logger.warning("a line of docproxy's own")
        audit.record("presign", "presigned URL", {"document": "d"})
        await asyncio.sleep(HOLD_SECONDS * 4)

    raw.writes.clear()
    asyncio.run(with_a_line_between())
    lines = [json.loads(line) for write in raw.writes for line in write.splitlines()]
    assert [line.get("document") or line["event"] for line in lines] == [
        "c",
        "a line of docproxy's own",
        "d",
    ]


def test_held_lines_go_out_at_once_when_enough_are_held():
    raw = Writes()
    held = HeldLines(seconds=60, most=3)

    async def four_lines() -> list[int]:
        seen = []
        for n in range(4):
            held.hold(raw, b"%d\n" % n)
            seen.append(len(raw.writes))
        return seen

    assert asyncio.run(four_lines()) == [0, 0, 1, 1]  # the third line wrote all three
    assert raw.writes == [b"0\n1\n2\n"]
    held.write()  # as at a worker's exit
    assert raw.writes == [b"0\n1\n2\n", b"3\n"]
    assert held.hold(raw, b"4\n") is False  # no event loop: the caller writes it itself
