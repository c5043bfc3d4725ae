"""How a JSON audit event reaches stderr: orjson's bytes written under the text stream when it
writes through (as stderr does), in order with the text written around it; else as text. On a
running event loop, events are held a few milliseconds and written together, and docproxy's own
lines still follow the events made before them. When another handler would see the events too,
each goes through the logger as a record, with the time and request id it was made with."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import pytest

from proxy.http import audit
from proxy.runtime import logging as runtime_logging
from proxy.runtime.logging import (
    HOLD_SECONDS,
    MISSED_AFTER,
    REQUEST_ID,
    HeldEvents,
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


def lines_of(writes: list[bytes]) -> list[dict]:
    return [json.loads(line) for write in writes for line in write.splitlines()]


@pytest.fixture
def use_stream():
    saved = logger.handlers, logger.propagate, audit._events.handler, audit._as_json

    def use(stream) -> OrderedStreamHandler:
        handler = OrderedStreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger.handlers, logger.propagate = [handler], False
        audit.enable(True, "json", handler)
        return handler

    yield use
    audit._events.write()
    logger.handlers, logger.propagate = saved[0], saved[1]
    audit._events.handler, audit._as_json = saved[2], saved[3]
    audit.enable(False)


def test_through_a_written_through_stream_an_event_is_one_write_of_bytes(use_stream):
    raw = Writes()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # as stderr's
    use_stream(stream)
    assert runtime_logging._utf8_bytes_of(stream) is raw  # the bytes go there, not the text
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
    assert runtime_logging._utf8_bytes_of(stream) is None
    audit.record("presign", "presigned URL", {"document": "a"})
    audit.record("presign", "presigned URL", {"document": "b"})
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["document"] for line in lines] == ["a", "b"]


def test_on_the_event_loop_events_are_held_then_written_at_once_and_in_order(use_stream):
    raw = Writes()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    use_stream(stream)

    async def two_events() -> list[bytes]:
        REQUEST_ID.set("first")
        audit.record("presign", "presigned URL", {"document": "a"})
        await asyncio.sleep(0)
        REQUEST_ID.set("second")
        audit.record("presign", "presigned URL", {"document": "b"})
        held = list(raw.writes)
        await asyncio.sleep(HOLD_SECONDS * 4)
        return held

    assert asyncio.run(two_events()) == []
    assert len(raw.writes) == 1
    events = lines_of(raw.writes)
    assert [(e["document"], e["request_id"]) for e in events] == [("a", "first"), ("b", "second")]

    async def with_a_line_between() -> None:
        audit.record("presign", "presigned URL", {"document": "c"})
        logger.warning("a line of docproxy's own")
        audit.record("presign", "presigned URL", {"document": "d"})
        await asyncio.sleep(HOLD_SECONDS * 4)

    raw.writes.clear()
    asyncio.run(with_a_line_between())
    assert [line.get("document") or line["event"] for line in lines_of(raw.writes)] == [
        "c",
        "a line of docproxy's own",
        "d",
    ]


def test_held_events_go_out_at_once_when_enough_are_held(use_stream):
    raw = Writes()
    handler = use_stream(io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    held = HeldEvents(audit.audit_logger, seconds=60, most=3)
    held.handler = handler

    async def four_events() -> list[int]:
        seen = []
        for n in range(4):
            held.add("presign", {"n": n})
            seen.append(len(raw.writes))
        return seen

    assert asyncio.run(four_events()) == [0, 0, 1, 1]  # the third event wrote all three
    assert [line["n"] for line in lines_of(raw.writes)] == [0, 1, 2]
    held.write()  # as at a worker's exit
    assert [line["n"] for line in lines_of(raw.writes[1:])] == [3]


def test_an_event_held_by_a_loop_that_closed_is_written_by_the_next_loop(use_stream):
    raw = Writes()
    handler = use_stream(io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    held = HeldEvents(audit.audit_logger, seconds=0.01)
    held.handler = handler

    async def one_event(n: int, wait: float) -> None:
        held.add("presign", {"n": n})
        await asyncio.sleep(wait)

    asyncio.run(one_event(0, 0))  # the loop closes before its timed write
    assert raw.writes == []
    time.sleep(0.01 + MISSED_AFTER + 0.05)  # past the write it scheduled
    asyncio.run(one_event(1, 0.05))
    assert [line["n"] for line in lines_of(raw.writes)] == [0, 1]


def test_with_another_handler_events_go_through_the_logger(use_stream):
    raw = Writes()
    use_stream(io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    other = Keep()
    logger.addHandler(other)

    async def one_event() -> float:
        REQUEST_ID.set("the-request")
        made = time.time()
        audit.record("presign", "presigned URL", {"document": "a"})
        await asyncio.sleep(HOLD_SECONDS * 4)
        return made

    try:
        made = asyncio.run(one_event())
    finally:
        logger.removeHandler(other)
    assert [record.getMessage() for record in seen] == ["presign"]
    assert seen[0].fields == {"document": "a"}  # type: ignore[attr-defined]
    assert abs(seen[0].created - made) < 0.01  # when it was made, not when written
    (line,) = lines_of(raw.writes)  # docproxy's handler wrote it from the record
    assert line["request_id"] == "the-request" and line["document"] == "a"
