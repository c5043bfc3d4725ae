from __future__ import annotations

import uuid

import pytest
import redis

from tests.conftest import require_server
from tests.state.shared import REDIS_URL


@pytest.fixture
def redis_state():
    """State overrides naming Redis with a key prefix of its own; its keys removed after."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_server("Redis at 127.0.0.1:6379", str(exc))
    prefix = f"docproxy-test-{uuid.uuid4().hex}:"
    yield {"state": {"redis_url": REDIS_URL, "key_prefix": prefix}}
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()
