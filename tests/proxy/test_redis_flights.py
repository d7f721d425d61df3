"""What only the Redis flight lock promises, beyond the FlightLock contract: leases that run
out when their holder dies, wake-ups across replicas, one holder among many replicas.

A "replica" here is a `RedisFlightLock` on its own client (its own connections), as in
another process. Leases are ~0.2 s so a dead holder's lease runs out quickly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_flights import RedisFlightLock
from tests.backends.redis import RedisBackend, redis_backend

__all__ = ["redis_backend"]  # the fixture, used by name

KEY = "ab" * 32

Replica = Callable[..., RedisFlightLock]


@pytest.fixture
async def replica(redis_backend: RedisBackend) -> AsyncIterator[Replica]:
    """Make a flight lock on a new client: one replica of the gateway."""
    made: list[tuple[RedisFlightLock, Redis]] = []

    def make(**options: float) -> RedisFlightLock:
        client = redis_client(redis_backend.url)
        lock = RedisFlightLock(client, redis_backend.prefix, **options)
        made.append((lock, client))
        return lock

    yield make
    for lock, client in made:
        await lock.aclose()
        await client.aclose()


@pytest.fixture
async def probe(redis_backend: RedisBackend) -> AsyncIterator[Redis]:
    """A client of the test's own, to look at (or tamper with) the leases."""
    client = redis_client(redis_backend.url)
    yield client
    await client.aclose()


async def test_a_dead_holders_lease_runs_out_and_a_waiter_takes_over(
    replica: Replica, probe: Redis, redis_backend: RedisBackend
) -> None:
    dying = replica(lease=0.2, renew_every=0)  # never renews: as if its process died
    survivor = replica(lease=0.2, poll=0.05)
    dead = await dying.acquire(KEY)
    taken = await asyncio.wait_for(survivor.acquire(KEY), 5)  # never released: the lease ran out
    assert taken.waited  # told to look in the cache first
    assert not await dying.renew(dead)  # the lease is lost, and says so
    await dying.release(dead, landed=True)  # late: must not free the new holder's lease
    assert await probe.get(f"{redis_backend.prefix}flight:{KEY}") == taken.token.encode()
    assert await survivor.renew(taken)
    await survivor.release(taken, landed=True)


async def test_a_holder_that_keeps_renewing_keeps_its_lease(replica: Replica) -> None:
    holder = replica(lease=0.5, renew_every=0.05)
    waiter = replica(lease=0.5, poll=0.05)
    hold = await holder.acquire(KEY)
    waiting = asyncio.create_task(waiter.acquire(KEY))
    await asyncio.sleep(1.6)  # more than three leases
    assert not waiting.done()
    assert await holder.renew(hold)
    await holder.release(hold, landed=True)
    await waiter.release(await asyncio.wait_for(waiting, 5), landed=True)


async def test_a_waiter_on_another_replica_is_woken_by_the_release(
    replica: Replica, probe: Redis, redis_backend: RedisBackend
) -> None:
    leader = replica()
    follower = replica(poll=60.0)  # far beyond the wait below: only a wake-up gets it in
    hold = await leader.acquire(KEY)
    waiting = asyncio.create_task(follower.acquire(KEY))
    channel = f"{redis_backend.prefix}flights"
    async with asyncio.timeout(5):
        while dict(await probe.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let it make its post-subscribe try and start waiting
    assert not waiting.done()
    await leader.release(hold, landed=True)
    taken = await asyncio.wait_for(waiting, 5)
    assert taken.waited
    await follower.release(taken, landed=True)


async def test_many_acquirers_on_many_replicas_hold_one_at_a_time(
    replica: Replica, probe: Redis, redis_backend: RedisBackend
) -> None:
    replicas = [replica(poll=0.05) for _ in range(3)]
    inside, most, holders = 0, 0, []

    async def fly(lock: RedisFlightLock) -> None:
        nonlocal inside, most
        hold = await lock.acquire(KEY)
        inside += 1
        most = max(most, inside)
        lease = await probe.get(f"{redis_backend.prefix}flight:{KEY}")
        assert lease == hold.token.encode()  # the lease in Redis is this holder's
        await asyncio.sleep(0.005)
        holders.append(hold)
        inside -= 1
        await lock.release(hold, landed=True)

    await asyncio.wait_for(asyncio.gather(*(fly(replicas[i % 3]) for i in range(30))), 60)
    assert (most, len(holders)) == (1, 30)
    assert sum(not h.waited for h in holders) == 1  # only the first found the key free


async def test_a_lease_taken_by_another_makes_renew_false(
    replica: Replica, probe: Redis, redis_backend: RedisBackend
) -> None:
    lock = replica()
    hold = await lock.acquire(KEY)
    lease = f"{redis_backend.prefix}flight:{KEY}"
    await probe.set(lease, "another-replica")  # as if it expired and was taken meanwhile
    assert not await lock.renew(hold)
    await lock.release(hold, landed=False)
    assert await probe.get(lease) == b"another-replica"  # not ours: left alone


async def test_a_cancelled_waiter_leaves_no_lease_behind(
    replica: Replica, probe: Redis, redis_backend: RedisBackend
) -> None:
    lock = replica(poll=0.05)
    hold = await lock.acquire(KEY)
    waiting = asyncio.create_task(lock.acquire(KEY))
    gone = asyncio.create_task(replica(poll=0.05).acquire(KEY))  # another replica's waiter
    await asyncio.sleep(0.1)
    waiting.cancel()  # its client went away
    gone.cancel()
    await lock.release(hold, landed=True)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(asyncio.CancelledError):
        await gone
    again = await asyncio.wait_for(lock.acquire(KEY), 5)  # not blocked by either
    assert not again.waited
    await lock.release(again, landed=True)
    assert await probe.exists(f"{redis_backend.prefix}flight:{KEY}") == 0
