"""Shared mode's Redis stores, opened together from the `[redis]` config (`url`, `prefix`).

One client (one connection pool) serves all three; the flight lock adds one pub/sub
connection. `open_redis_stores` pings first, so a replica that cannot reach Redis fails at
start with `BackendUnavailable` naming it."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from proxy.stores.redis_connection import DEFAULT_TIMEOUT, connect_redis
from proxy.stores.redis_entries import RedisEntryStore
from proxy.stores.redis_flights import DEFAULT_LEASE, RedisFlightLock
from proxy.stores.redis_limits import RedisLimitStore

__all__ = ["RedisStores", "open_redis_stores"]


@dataclass(frozen=True, slots=True)
class RedisStores:
    client: Redis
    entries: RedisEntryStore
    limits: RedisLimitStore
    flights: RedisFlightLock

    async def aclose(self) -> None:
        await self.flights.aclose()
        await self.client.aclose()


async def open_redis_stores(
    url: str, prefix: str, *, lease: float = DEFAULT_LEASE, reply_timeout: float = DEFAULT_TIMEOUT
) -> RedisStores:
    """Connect to `url` and build every Redis store under `prefix` (every key starts with it)."""
    client = await connect_redis(url, reply_timeout=reply_timeout)
    return RedisStores(
        client=client,
        entries=RedisEntryStore(client, prefix),
        limits=RedisLimitStore(client, prefix),
        flights=RedisFlightLock(client, prefix, lease=lease),
    )
