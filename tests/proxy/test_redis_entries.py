"""What only the Redis entry store promises, beyond the AsyncEntryStore contract: keys under
the prefix, the disk store's JSON, expiry as a Redis TTL, stats that follow expiry and
replacement without scanning, and `get_many` for an n-image hit."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from policies.models import Entry
from proxy.stores.entry_json import dump_entry
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_entries import RedisEntryStore
from tests.backends.redis import RedisBackend, keys_under, redis_backend

__all__ = ["redis_backend"]  # the fixture, used by name

ENTRY = Entry("ab" * 32, "png", 1024, 1024, "gpt-image-1", "openai", 42_000, 1.7e9)
LONGER = dataclasses.replace(ENTRY, revised_prompt="a kite over the sea at dawn")


@pytest.fixture
async def client(redis_backend: RedisBackend) -> AsyncIterator[Redis]:
    made = redis_client(redis_backend.url)
    yield made
    await made.aclose()


@pytest.fixture
def store(client: Redis, redis_backend: RedisBackend) -> RedisEntryStore:
    return RedisEntryStore(client, redis_backend.prefix)


async def test_entries_are_the_disk_stores_json_under_the_prefix(
    store: RedisEntryStore, client: Redis, redis_backend: RedisBackend
) -> None:
    await store.put("k", 0, ENTRY)
    assert await client.get(f"{redis_backend.prefix}entry:k:0") == dump_entry(ENTRY).encode()
    keys = keys_under(redis_backend.url, redis_backend.prefix)
    assert keys and all(k.startswith(redis_backend.prefix.encode()) for k in keys)


async def test_a_ttl_is_the_keys_expiry(
    store: RedisEntryStore, client: Redis, redis_backend: RedisBackend
) -> None:
    await store.put("k", 0, ENTRY, ttl=90.0)
    await store.put("k", 1, ENTRY)
    await store.put("k", 2, ENTRY, ttl=0)  # expired already: not stored
    prefix = redis_backend.prefix
    assert 89_000 < await client.pttl(f"{prefix}entry:k:0") <= 90_000
    assert await client.pttl(f"{prefix}entry:k:1") == -1  # no ttl: kept until deleted
    assert await store.get("k", 2) is None
    await store.put("k", 0, ENTRY)  # a put without a ttl replaces one with
    assert await client.pttl(f"{prefix}entry:k:0") == -1
    assert (await store.stats()).items == 2


async def test_stats_follow_replacement_delete_and_expiry(store: RedisEntryStore) -> None:
    await store.put("k", 0, ENTRY)
    await store.put("k", 0, LONGER)  # replaced: counted once, at its new size
    await store.put("k", 1, ENTRY, ttl=0.05)
    await store.put("gone", 0, ENTRY)
    await store.delete("gone", 0)
    stats = await store.stats()
    assert (stats.items, stats.bytes) == (2, len(dump_entry(LONGER)) + len(dump_entry(ENTRY)))
    async with asyncio.timeout(5):
        while await store.get("k", 1) is not None:  # Redis expires it (50 ms)
            await asyncio.sleep(0.01)
    stats = await store.stats()
    assert (stats.items, stats.bytes) == (1, len(dump_entry(LONGER)))


async def test_get_many_reads_every_index_at_once(store: RedisEntryStore, client: Redis) -> None:
    await store.put("k", 0, ENTRY)
    await store.put("k", 2, LONGER)
    assert await store.get_many("k", 4) == [ENTRY, None, LONGER, None]
    assert await store.get_many("k", 0) == []


async def test_an_unreadable_entry_is_a_miss(
    store: RedisEntryStore, client: Redis, redis_backend: RedisBackend
) -> None:
    await client.set(f"{redis_backend.prefix}entry:k:0", b'{"blob": "from a newer version"}')
    assert await store.get("k", 0) is None
    assert await store.get_many("k", 1) == [None]


async def test_a_burst_beyond_the_pool_waits_for_connections_instead_of_failing(
    store: RedisEntryStore,
) -> None:
    """Three times the pool's connections at once (one replica under a burst of identical
    misses): every command is answered; none fails with "Too many connections"."""
    from proxy.stores.redis_connection import POOL_SIZE

    await store.put("k", 0, ENTRY)
    found = await asyncio.gather(*(store.get("k", 0) for _ in range(3 * POOL_SIZE)))
    assert found == [ENTRY] * (3 * POOL_SIZE)
