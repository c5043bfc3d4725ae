"""What the shared-state tests share: Redis on 127.0.0.1, a key prefix per test, token claims,
and waiting for what every replica must see within a second."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx

REDIS_URL = "redis://127.0.0.1:6379/0"
# A revocation reaches every process within a second; the tests allow more on a loaded machine.
SEEN_WITHIN = 3.0


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def eventually(check: Callable[[], bool], within: float = SEEN_WITHIN) -> float:
    """Seconds until ``check`` held; fails after ``within``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not seen within {within} s")
        time.sleep(0.02)
    return time.monotonic() - start


def status(method: str, url: str, token: str | None = None, **kwargs) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, timeout=10, **kwargs).status_code


def fresh_window() -> None:
    """Budgets refill on the minute: start well inside one, so the test stays in it."""
    while time.time() % 60 > 45:
        time.sleep(0.5)
