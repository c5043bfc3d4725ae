"""The revocations every request is checked against: a local snapshot, read again whenever
the store says they changed, so a check costs no round trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from proxy.state.errors import StateFailed
from proxy.state.revocation import RevocationSet
from proxy.state.store import StateStore

logger = logging.getLogger("docproxy")


class WatchedRevocations:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.current = RevocationSet()
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    async def start(self, wait: float = 2.0) -> None:
        """Watch in the background; wait up to ``wait`` seconds for the first snapshot."""
        self._task = asyncio.create_task(self._watch(), name="docproxy-revocations")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        async for _ in self.store.changes():
            try:
                self.current = RevocationSet(await self.store.revocations())
            except StateFailed as exc:
                logger.warning("state: revocations kept as last read: %s", exc)
            self._first.set()
