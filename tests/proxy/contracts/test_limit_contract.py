"""The LimitStore contract, over every adapter: what a Redis LimitStore must also do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from policies.ratelimit import Allowed, Limited, Oversized, Rate
from proxy.ports import LimitStore
from proxy.stores.buckets import SharedBuckets
from proxy.stores.embedded import SqliteLimitStore
from proxy.stores.memory_state import MemoryLimitStore

NOW = 1_700_000_000.0
REQS = Rate(60, burst=5)  # a token a second, at most 5
IMGS = Rate(60, burst=10, unit="images")

FACTORIES: dict[str, Callable[[Path], LimitStore]] = {
    "sqlite": lambda tmp: SqliteLimitStore(SharedBuckets(tmp / "state.sqlite3")),
    "memory": lambda _: MemoryLimitStore(),
}


@pytest.fixture(params=sorted(FACTORIES))
def limits(request: pytest.FixtureRequest, tmp_path: Path) -> LimitStore:
    return FACTORIES[request.param](tmp_path)


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
