"""The one bounded cache every docproxy cache is made of.

A cache on the request path must not grow with what clients send (token strings, Host headers,
document ids), so each one keeps at most ``max_entries`` and forgets its oldest entry first.
It is a ``dict`` underneath so that a hit is ``dict.get`` itself: the cheapest look-up Python
has, on a path where every instruction is counted (``bench/README.md``).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dict of at most ``max_entries``: storing a new key past that forgets the oldest one.

    "Oldest" is the first stored, or the least recently used where readers ``touch`` each hit.
    """

    __slots__ = ("max_entries",)

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def put(self, key: K, value: V) -> None:
        if key not in self:
            while self and len(self) >= self.max_entries:
                del self[next(iter(self))]
        self[key] = value

    def touch(self, key: K) -> None:
        """Make ``key`` (present) the most recently used: the last to be forgotten."""
        self[key] = self.pop(key)
