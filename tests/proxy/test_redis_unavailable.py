"""Redis down: every Redis store method raises `BackendUnavailable("redis", ...)`, which the
service turns into a 503 naming Redis, and opening the stores fails at start the same way.
"Down" is a port where nothing listens (bound, so nothing else takes it meanwhile)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from policies.ratelimit import Rate
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_entries import RedisEntryStore
from proxy.stores.redis_flights import RedisFlightLock
from proxy.stores.redis_limits import RedisLimitStore
from proxy.stores.redis_stores import open_redis_stores
from tests.proxy.contracts.test_async_store_contract import ENTRY


@pytest.fixture
def dead_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield f"redis://:secret-password@127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
async def dead(dead_url: str) -> AsyncIterator[Redis]:
    client = redis_client(dead_url, reply_timeout=1.0)
    yield client
    await client.aclose()


def _says_redis(caught: pytest.ExceptionInfo[BackendUnavailable], url: str) -> None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert caught.value.backend == "redis"
    assert f"127.0.0.1:{port}" in caught.value.detail
    assert "secret-password" not in str(caught.value)  # the URL's password is never shown


async def test_the_entry_store_says_redis_is_down(dead: Redis, dead_url: str) -> None:
    store = RedisEntryStore(dead, "p:")
    calls = [
        lambda: store.get("k", 0),
        lambda: store.get_many("k", 2),
        lambda: store.put("k", 0, ENTRY, ttl=60),
        lambda: store.delete("k", 0),
        store.ping,
        store.stats,
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable) as caught:
            await call()
        _says_redis(caught, dead_url)


async def test_the_limit_store_and_the_flight_lock_say_redis_is_down(
    dead: Redis, dead_url: str
) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await RedisLimitStore(dead, "p:").take_all([("req:a", Rate(60), 1)], 1.7e9)
    _says_redis(caught, dead_url)
    lock = RedisFlightLock(dead, "p:")
    with pytest.raises(BackendUnavailable) as caught:
        await lock.acquire("ab" * 32)
    _says_redis(caught, dead_url)
    await lock.aclose()


async def test_opening_the_stores_fails_at_start(dead_url: str) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await open_redis_stores(dead_url, "p:", reply_timeout=1.0)
    _says_redis(caught, dead_url)
