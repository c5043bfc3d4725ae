"""Readiness: whether this process can serve downloads now.

Ready means the catalog answered a trivial query and every configured store answered its
cheap probe (``probe()`` of each backend), each within ``health.timeout``. The verdict is kept
for ``health.interval`` seconds and one check runs at a time, so a probe storm from load
balancers costs the dependencies one round of probes per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from backends.base import StorageBackend
from proxy.catalog.lookup import Catalog
from proxy.config.settings import HealthConfig

logger = logging.getLogger("docproxy")

# A reason is a dependency's error text, cut short: it names the fault, not a whole traceback.
REASON_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    failures: Mapping[str, str]  # dependency ("catalog", "storage.NAME") -> why it failed
    checked_at: float

    @property
    def ready(self) -> bool:
        return not self.failures


class Readiness:
    def __init__(
        self,
        catalog: Catalog,
        backends: Mapping[str, StorageBackend],
        config: HealthConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._probes: dict[str, Callable[[], Awaitable[None]]] = {"catalog": catalog.ping}
        for name, backend in backends.items():
            self._probes[f"storage.{name}"] = backend.probe
        self._verdict: Verdict | None = None
        self._lock = asyncio.Lock()

    async def verdict(self) -> Verdict:
        """The last verdict while it is fresh, else a new one (one check at a time)."""
        verdict = self._verdict
        if verdict is not None and self._fresh(verdict):
            return verdict
        async with self._lock:
            verdict = self._verdict
            if verdict is not None and self._fresh(verdict):
                return verdict  # made by the check this call waited for
            new = await self._check()
            self._report_change(verdict, new)
            self._verdict = new
            return new

    def _fresh(self, verdict: Verdict) -> bool:
        return self._clock() - verdict.checked_at < self.config.interval

    async def _check(self) -> Verdict:
        names = list(self._probes)
        reasons = await asyncio.gather(*(self._probe(name) for name in names))
        failures = {name: why for name, why in zip(names, reasons, strict=True) if why}
        return Verdict(failures=failures, checked_at=self._clock())

    async def _probe(self, name: str) -> str | None:
        """None when the dependency answered in time, else why not."""
        timeout = self.config.timeout
        try:
            await asyncio.wait_for(self._probes[name](), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as exc:
            return (str(exc) or type(exc).__name__)[:REASON_LIMIT]
        return None

    @staticmethod
    def _report_change(old: Verdict | None, new: Verdict) -> None:
        """One log line when readiness changes, not one per probe request."""
        if new.ready and old is not None and not old.ready:
            logger.info("ready again: every dependency answers")
        elif not new.ready and (old is None or dict(old.failures) != dict(new.failures)):
            reasons = "; ".join(f"{name}: {why}" for name, why in new.failures.items())
            logger.warning("not ready: %s", reasons)
