"""What every shared-state store offers: revocations, counted link uses, rate counters.

Implementations are listed in ``proxy.state.registry``, one line each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from proxy.state.revocation import Kind, Revocation


class StateStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def revoke(self, revocation: Revocation) -> None:
        """Record (or replace) a revocation and tell every process that watches."""

    async def unrevoke(self, kind: Kind, value: str) -> bool:
        """Remove a revocation; False when there was none."""

    async def revocations(self) -> list[Revocation]:
        """Every revocation still in force."""

    def changes(self) -> AsyncIterator[None]:
        """Yields once at once, then whenever the revocations may have changed (within a
        second of the change); runs until cancelled."""

    async def increment(self, key: str, expires: int) -> int:
        """Add one to the counter ``key``, atomically across processes and replicas; the
        count including this one. The counter is forgotten after ``expires`` (Unix time)."""

    async def count(self, key: str) -> int:
        """The counter ``key`` as it stands (0 when absent or forgotten)."""
