"""The sliding window, on a clock the test moves by hand."""

from __future__ import annotations

import asyncio

from proxy.limits.window import SlidingWindowLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_limit_blocks_until_the_oldest_event_leaves_the_window():
    clock = Clock()
    limiter = SlidingWindowLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert run(limiter.retry_after(["a"])) is None
        run(limiter.hit(["a"]))
        clock.now += 10  # events at 1000, 1010, 1020
    assert run(limiter.retry_after(["a"])) == 30  # the first leaves at 1060; now is 1030
    clock.now = 1059.5
    assert run(limiter.retry_after(["a"])) == 1  # never "0": a client retrying at once waits
    clock.now = 1060
    assert run(limiter.retry_after(["a"])) is None  # one slot free again, not all three
    run(limiter.hit(["a"]))
    assert run(limiter.retry_after(["a"])) == 10  # the second event (1010) leaves at 1070


def test_keys_count_apart_and_any_full_key_blocks():
    clock = Clock()
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    run(limiter.hit(["client:a", "address:x"]))
    run(limiter.hit(["client:b", "address:x"]))
    assert run(limiter.retry_after(["client:c", "address:x"])) == 60  # the address is full
    assert run(limiter.retry_after(["client:a", "address:y"])) is None  # one event each
    assert run(limiter.retry_after(["client:b", "address:y"])) is None


def test_the_table_of_keys_is_bounded():
    clock = Clock()
    limiter = SlidingWindowLimiter(1, 60, keys_kept=3, clock=clock)
    for key in "abcd":
        run(limiter.hit([key]))
    assert run(limiter.retry_after(["a"])) is None  # forgotten first, the least recently seen
    assert all(run(limiter.retry_after([key])) == 60 for key in "bcd")
