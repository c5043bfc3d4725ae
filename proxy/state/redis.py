"""The shared state in Redis, for every replica: revocations in one hash, announced on a
channel; counters as keys that expire with what they count."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.state.errors import StateFailed
from proxy.state.revocation import Kind, Revocation

logger = logging.getLogger("docproxy")

# Pub/sub says at once that something changed; the version key, read this often, covers a
# message lost while the subscription was down.
VERSION_CHECK_SECONDS = 2.0
RETRY_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0


class RedisState:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._hash = f"{prefix}revocations"
        self._version = f"{prefix}revocations:version"
        self._channel = f"{prefix}revocations"
        self._client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
            )
        return self._client

    async def open(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            # Not fatal: the service answers what needs Redis with a 500 until it is back.
            logger.warning("state: Redis at %s unavailable at start: %s", self._safe_url(), exc)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _safe_url(self) -> str:
        """The URL without its password, for the log."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    def _failed(self, doing: str, exc: Exception) -> StateFailed:
        return StateFailed(f"Redis at {self._safe_url()}: {doing}: {exc}")

    async def _announce(self) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(self._version)
            pipe.publish(self._channel, b"changed")
            await pipe.execute()

    async def revoke(self, revocation: Revocation) -> None:
        field = f"{revocation.kind.value}:{revocation.value}"
        value = json.dumps({"at": revocation.revoked_at, "until": revocation.until})
        try:
            await self.client.hset(self._hash, field, value)
            lapsed = [r for r in await self._all() if not r.active(time.time())]
            if lapsed:
                await self.client.hdel(self._hash, *(f"{r.kind.value}:{r.value}" for r in lapsed))
            await self._announce()
        except RedisError as exc:
            raise self._failed("revoke", exc) from exc

    async def unrevoke(self, kind: Kind, value: str) -> bool:
        try:
            removed = await self.client.hdel(self._hash, f"{kind.value}:{value}")
            await self._announce()
        except RedisError as exc:
            raise self._failed("remove a revocation", exc) from exc
        return bool(removed)

    async def _all(self) -> list[Revocation]:
        revocations = []
        for field, raw in (await self.client.hgetall(self._hash)).items():
            kind, _, value = field.decode().partition(":")
            entry = json.loads(raw)
            revocations.append(Revocation(Kind(kind), value, entry["at"], entry["until"]))
        return revocations

    async def revocations(self) -> list[Revocation]:
        try:
            found = await self._all()
        except RedisError as exc:
            raise self._failed("read revocations", exc) from exc
        now = time.time()
        return [r for r in found if r.active(now)]

    async def changes(self) -> AsyncIterator[None]:
        down = False
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                seen = await self.client.get(self._version)
                if down:
                    logger.info("state: Redis at %s reachable again", self._safe_url())
                    down = False
                yield  # (re)subscribed: whatever happened meanwhile is read now
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=VERSION_CHECK_SECONDS
                    )
                    version = await self.client.get(self._version)
                    if message is not None or version != seen:
                        seen = version
                        yield
            except (RedisError, OSError) as exc:
                if not down:
                    logger.warning(
                        "state: Redis at %s unreachable, revocations as last read: %s",
                        self._safe_url(),
                        exc,
                    )
                    down = True
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                await pubsub.aclose()

    async def increment(self, key: str, expires: int) -> int:
        name = f"{self.prefix}{key}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expireat(name, expires)
                count, _ = await pipe.execute()
        except RedisError as exc:
            raise self._failed("count", exc) from exc
        return int(count)

    async def count(self, key: str) -> int:
        try:
            value = await self.client.get(f"{self.prefix}{key}")
        except RedisError as exc:
            raise self._failed("read a count", exc) from exc
        return int(value) if value is not None else 0
