"""The LimitStore contract, over every adapter: what a Redis LimitStore must also do."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.config import Settings
from proxy.config_cost import parse_cost
from proxy.ports import LimitStore
from proxy.stores.buckets import SharedBuckets
from proxy.stores.embedded import SqliteLimitStore
from proxy.stores.memory_state import MemoryLimitStore
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_limits import RedisLimitStore
from tests.backends.redis import open_redis_backend
from tests.conftest import CountingProvider, start_gateway

NOW = 1_700_000_000.0
REQS = Rate(60, burst=5)  # a token a second, at most 5
IMGS = Rate(60, burst=10, unit="images")


def _sqlite(tmp: Path) -> tuple[LimitStore, Callable[[], None]]:
    buckets = SharedBuckets(tmp / "state.sqlite3")
    return SqliteLimitStore(buckets), buckets.close


FACTORIES: dict[str, Callable[[Path], tuple[LimitStore, Callable[[], None]]]] = {
    "sqlite": _sqlite,
    "memory": lambda _: (MemoryLimitStore(), lambda: None),
}


@pytest.fixture(params=[*sorted(FACTORIES), "redis"])
async def limits(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LimitStore]:
    if request.param == "redis":
        backend = open_redis_backend(request)
        client = redis_client(backend.url)
        yield RedisLimitStore(client, backend.prefix)
        await client.aclose()
        return
    store, close = FACTORIES[request.param](tmp_path)
    yield store
    close()


async def test_a_new_bucket_is_full_and_drains_to_zero(limits: LimitStore) -> None:
    seen = [await limits.take_all([("req:a", REQS, 1)], NOW) for _ in range(6)]
    assert [d.remaining for d in seen[:5] if isinstance(d, Allowed)] == [4, 3, 2, 1, 0]
    assert isinstance(seen[5], Limited)
    assert seen[5].retry_after == pytest.approx(1.0, abs=0.01)


async def test_take_all_is_all_or_nothing(limits: LimitStore) -> None:
    assert isinstance(await limits.take_all([("img:a", IMGS, 8)], NOW), Allowed)
    both = [("req:a", REQS, 1), ("img:a", IMGS, 3)]  # requests have room, images do not
    assert isinstance(await limits.take_all(both, NOW), Limited)
    requests_left = await limits.take_all([("req:a", REQS, 1)], NOW)
    assert isinstance(requests_left, Allowed)
    assert requests_left.remaining == 4  # the denied take took nothing from it


async def test_refill_never_goes_above_the_burst(limits: LimitStore) -> None:
    await limits.take_all([("req:a", REQS, 5)], NOW)
    later = await limits.take_all([("req:a", REQS, 1)], NOW + 3_600)
    assert isinstance(later, Allowed)
    assert later.remaining == 4


async def test_a_cost_above_the_burst_is_oversized(limits: LimitStore) -> None:
    assert isinstance(await limits.take_all([("req:a", REQS, 6)], NOW), Oversized)
    assert isinstance(await limits.take_all([("req:a", REQS, 5)], NOW), Allowed)


async def test_buckets_are_per_key(limits: LimitStore) -> None:
    await limits.take_all([("req:a", REQS, 5)], NOW)
    assert isinstance(await limits.take_all([("req:b", REQS, 5)], NOW), Allowed)


async def test_concurrent_takes_never_spend_a_token_twice(limits: LimitStore) -> None:
    results = await asyncio.gather(*(limits.take_all([("req:a", REQS, 1)], NOW) for _ in range(12)))
    allowed = [r for r in results if isinstance(r, Allowed)]
    assert len(allowed) == 5
    assert sorted(a.remaining for a in allowed) == [0, 1, 2, 3, 4]


# --- what only the SQLite adapter promises: a wait for another process's lock is off the loop


async def _turns(count: int = 50) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_take_waits_for_another_writer_without_holding_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    buckets = SharedBuckets(path)
    store = SqliteLimitStore(buckets)
    other = sqlite3.connect(path, isolation_level=None)  # another worker process, mid-take
    other.execute("BEGIN IMMEDIATE")
    take = asyncio.create_task(store.take_all([("req:a", REQS, 1)], NOW))
    await _turns()  # the loop keeps turning while the take waits
    assert not take.done()
    other.execute("COMMIT")
    decision = await take
    assert isinstance(decision, Allowed)
    assert decision.remaining == 4
    other.close()
    buckets.close()


async def test_the_gateway_keeps_answering_while_another_process_holds_the_buckets(
    settings: Settings, provider: CountingProvider
) -> None:
    secret = "sk-web-app-0123456789abcdef"
    keys = [{"name": "web-app", "key": secret, "requests_per_minute": 60}]
    settings = replace(settings, cost=parse_cost({"keys": keys}))
    gw = await start_gateway(settings, provider, time.time)
    other = sqlite3.connect(settings.data_dir / "state.sqlite3", isolation_level=None)
    try:
        async with aiohttp.ClientSession() as http:
            other.execute("BEGIN IMMEDIATE")  # another worker process, mid-take
            body = {"model": "gpt-image-1-mini", "prompt": "a kite", "size": "1024x1024"}
            headers = {"Authorization": f"Bearer {secret}"}
            generate = asyncio.create_task(
                http.post(gw.base_url + "/images/generations", json=body, headers=headers)
            )
            for _ in range(100):  # let the request reach its take (it then waits there)
                await asyncio.sleep(0.01)
            assert not generate.done()  # a take on the loop failed by now: "database is locked"
            async with http.get(gw.root + "/healthz") as health:
                assert health.status == 200  # the loop answers while the take waits
            assert not generate.done()
            other.execute("COMMIT")
            answer = await generate
            assert answer.status == 200
            assert answer.headers["x-ratelimit-remaining-requests"] == "59"
    finally:
        other.close()
        await gw.close()
