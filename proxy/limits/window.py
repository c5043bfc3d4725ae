"""Counting events per key over a sliding window: the ``RateLimiter`` interface, and the
in-process implementation each worker holds (a shared store can implement the same two calls).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

# Keys remembered at most: a client naming a new id or address on every request cannot grow
# the table past this; the key seen least recently goes first.
KEYS_KEPT = 65536


class RateLimiter(Protocol):
    """At most ``limit`` events per key within ``window`` seconds."""

    async def retry_after(self, keys: Sequence[str]) -> int | None:
        """Whole seconds until every key in ``keys`` is below its limit; None when they are."""
        ...

    async def hit(self, keys: Sequence[str]) -> None:
        """Count one event against each key."""
        ...


class SlidingWindowLimiter:
    """``RateLimiter`` in this process: per key, the times of its last ``limit`` events."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        keys_kept: int = KEYS_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.keys_kept = keys_kept
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    async def retry_after(self, keys: Sequence[str]) -> int | None:
        now = self.clock()
        wait = 0.0
        for key in keys:
            events = self._events.get(key)
            if events is None:
                continue
            while events and events[0] <= now - self.window:
                events.popleft()
            if not events:
                del self._events[key]
            elif len(events) >= self.limit:
                wait = max(wait, events[0] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def hit(self, keys: Sequence[str]) -> None:
        now = self.clock()
        for key in keys:
            events = self._events.get(key)
            if events is None:
                events = self._events[key] = deque(maxlen=self.limit)
                while len(self._events) > self.keys_kept:
                    self._events.popitem(last=False)
            else:
                self._events.move_to_end(key)
            events.append(now)
