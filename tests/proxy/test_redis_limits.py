"""What only the Redis limit store promises, beyond the LimitStore contract: one script is
atomic across replicas, survives a script cache flush, decides exactly as the pure core,
and lets a bucket's key expire once it would be full again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.stores.memory_state import MemoryLimitStore
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_limits import RedisLimitStore
from tests.backends.redis import RedisBackend, keys_under, redis_backend

__all__ = ["redis_backend"]  # the fixture, used by name

NOW = 1_700_000_000.0
REQS = Rate(60, burst=5)


@pytest.fixture
async def clients(redis_backend: RedisBackend) -> AsyncIterator[list[Redis]]:
    """Three clients: three replicas' connection pools."""
    made = [redis_client(redis_backend.url) for _ in range(3)]
    yield made
    for client in made:
        await client.aclose()


def _fields(decision: Allowed | Limited | Oversized) -> tuple[object, ...]:
    if isinstance(decision, Oversized):  # its error is an exception: compare what it says
        return ("oversized", decision.cost, decision.limit, decision.burst, str(decision.error))
    return (decision,)


async def test_fifty_concurrent_takes_across_replicas_allow_exactly_the_burst(
    clients: list[Redis], redis_backend: RedisBackend
) -> None:
    rate = Rate(60, burst=20)
    stores = [RedisLimitStore(c, redis_backend.prefix) for c in clients]
    takes = [stores[i % 3].take_all([("req:a", rate, 1)], NOW) for i in range(50)]
    results = await asyncio.gather(*takes)
    allowed = [r for r in results if isinstance(r, Allowed)]
    assert sorted(a.remaining for a in allowed) == list(range(20))
    assert all(isinstance(r, Limited) for r in results if not isinstance(r, Allowed))


async def test_a_flushed_script_is_loaded_again(
    clients: list[Redis], redis_backend: RedisBackend
) -> None:
    store = RedisLimitStore(clients[0], redis_backend.prefix)
    first = await store.take_all([("req:a", REQS, 1)], NOW)
    await clients[1].script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
    second = await store.take_all([("req:a", REQS, 1)], NOW)
    assert isinstance(first, Allowed) and isinstance(second, Allowed)
    assert (first.remaining, second.remaining) == (4, 3)  # the bucket carried on


async def test_decisions_match_the_pure_core_take_for_take(
    clients: list[Redis], redis_backend: RedisBackend
) -> None:
    """Random takes of several buckets at uneven times (the clock going back now and then):
    the Redis store and the in-memory store (the core's take_all) agree exactly."""
    rates = {"req:a": Rate(60, burst=5), "img:a": Rate(7, burst=3), "req:b": Rate(90)}
    redis_store, memory = RedisLimitStore(clients[0], redis_backend.prefix), MemoryLimitStore()
    rng, now = random.Random(14), NOW
    for _ in range(300):
        now += rng.choice([0.0, 0.001, 0.3, 0.7, 1.3, 9.0, -2.0])
        names = rng.sample(sorted(rates), rng.randint(1, 3))
        takes = [(name, rates[name], rng.choice([0, 1, 1, 2, 3, 6])) for name in names]
        got, want = await redis_store.take_all(takes, now), await memory.take_all(takes, now)
        assert _fields(got) == _fields(want), (takes, now)


async def test_a_bucket_key_expires_when_the_bucket_would_be_full(
    clients: list[Redis], redis_backend: RedisBackend
) -> None:
    store = RedisLimitStore(clients[0], redis_backend.prefix)
    await store.take_all([("req:a", REQS, 2), ("req:b", REQS, 0)], NOW)
    buckets = [f"{redis_backend.prefix}bucket:req:{name}".encode() for name in "ab"]
    assert sorted(keys_under(redis_backend.url, redis_backend.prefix)) == buckets
    ttls = [await clients[0].pttl(bucket) for bucket in buckets]
    assert 2_000 < ttls[0] <= 3_000  # two tokens at one a second, plus a second to spare
    assert 0 < ttls[1] <= 1_000  # full already: only the second to spare
    await store.take_all([("req:a", REQS, 1)], NOW - 10)  # the clock went back ten seconds
    assert 13_000 < await clients[0].pttl(buckets[0]) <= 14_000  # full at NOW + 3: 13 s ahead


async def test_bad_takes_are_refused_before_redis(
    clients: list[Redis], redis_backend: RedisBackend
) -> None:
    store = RedisLimitStore(clients[0], redis_backend.prefix)
    with pytest.raises(ValueError, match="at least one bucket"):
        await store.take_all([], NOW)
    with pytest.raises(ValueError, match=">= 0"):
        await store.take_all([("req:a", REQS, -1)], NOW)
