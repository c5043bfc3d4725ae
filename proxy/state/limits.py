"""Per-caller request budgets: so many requests a minute for each (client id, subject) pair,
counted in the shared state so that every replica draws on the same budget."""

from __future__ import annotations

import json
import math
import time

from proxy.state.store import StateStore

WINDOW = 60  # seconds: budgets are per minute, in fixed windows of the clock


class CallerBudget:
    """One budget (``name``: downloads, presigns) of ``per_minute`` requests; None: no limit,
    and no round trip to the state either."""

    def __init__(self, store: StateStore, name: str, per_minute: int | None) -> None:
        self.store = store
        self.name = name
        self.per_minute = per_minute

    async def spend(self, client_id: str, subject: str, *, now: float | None = None) -> int | None:
        """Count one request; None while within the budget, else the seconds until it refills."""
        if self.per_minute is None:
            return None
        now = time.time() if now is None else now
        window = int(now // WINDOW)
        ends = (window + 1) * WINDOW
        # JSON keeps the pair unambiguous whatever characters ids and subjects hold.
        key = f"rate:{self.name}:{window}:{json.dumps([client_id, subject])}"
        if await self.store.increment(key, ends + 1) <= self.per_minute:
            return None
        return max(1, math.ceil(ends - now))
