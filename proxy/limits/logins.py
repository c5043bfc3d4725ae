"""Failed client logins, counted per client id and per remote address, so that guessing a
secret is slowed to ``auth.max_failed_logins`` tries per window for one client id, however
many addresses try it, and for one address, however many client ids it tries."""

from __future__ import annotations

from proxy.config.settings import AuthConfig
from proxy.limits.window import RateLimiter, SlidingWindowLimiter


class FailedLogins:
    def __init__(self, limiter: RateLimiter | None) -> None:
        self.limiter = limiter  # None: no limit

    @classmethod
    def from_config(cls, config: AuthConfig) -> FailedLogins:
        if config.max_failed_logins == 0:
            return cls(None)
        return cls(SlidingWindowLimiter(config.max_failed_logins, config.failed_login_window))

    @staticmethod
    def keys(client_id: str, address: str | None) -> tuple[str, ...]:
        by_client = f"client:{client_id}"
        return (by_client,) if address is None else (by_client, f"address:{address}")

    async def retry_after(self, client_id: str, address: str | None) -> int | None:
        """Seconds to wait before this client id may be tried from this address; None: now."""
        if self.limiter is None:
            return None
        return await self.limiter.retry_after(self.keys(client_id, address))

    async def failed(self, client_id: str, address: str | None) -> None:
        if self.limiter is not None:
            await self.limiter.hit(self.keys(client_id, address))
