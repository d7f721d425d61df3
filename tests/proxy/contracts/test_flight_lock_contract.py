"""The FlightLock contract, over every adapter: what a Redis lease lock must also do."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.ports import FlightLock
from proxy.stores.flight_locks import FcntlFlightLock, MemoryFlightLock
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_flights import RedisFlightLock
from tests.backends.redis import open_redis_backend

REPO = Path(__file__).resolve().parents[3]
KEY = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture(params=["fcntl", "memory", "redis"])
async def lock(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FlightLock]:
    if request.param == "memory":
        yield MemoryFlightLock()
        return
    if request.param == "redis":
        backend = open_redis_backend(request)
        client = redis_client(backend.url)
        redis_lock = RedisFlightLock(client, backend.prefix)
        yield redis_lock
        await redis_lock.aclose()
        await client.aclose()
        return
    fcntl_lock = FcntlFlightLock(tmp_path / "flights.lock")
    yield fcntl_lock
    fcntl_lock.close()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_free_key_is_held_at_once(lock: FlightLock) -> None:
    hold = await lock.acquire(KEY)
    assert (hold.key, hold.waited) == (KEY, False)
    assert await lock.renew(hold)
    await lock.release(hold, landed=True)
    assert not await lock.renew(hold)


async def test_a_second_holder_waits_until_the_first_lets_go(lock: FlightLock) -> None:
    first = await lock.acquire(KEY)
    second = asyncio.create_task(lock.acquire(KEY))
    await _settle()
    assert not second.done()
    await lock.release(first, landed=True)
    hold = await asyncio.wait_for(second, 5)
    assert hold.waited  # told: look in the cache before generating
    assert await lock.renew(hold)
    await lock.release(hold, landed=False)


async def test_keys_do_not_block_each_other(lock: FlightLock) -> None:
    first = await lock.acquire(KEY)
    other = await asyncio.wait_for(lock.acquire(OTHER), 5)
    assert not other.waited
    await lock.release(other, landed=True)
    await lock.release(first, landed=True)


async def test_a_failed_flight_lets_the_next_holder_in(lock: FlightLock) -> None:
    first = await lock.acquire(KEY)
    waiters = [asyncio.create_task(lock.acquire(KEY)) for _ in range(3)]
    await _settle()
    await lock.release(first, landed=False)
    holders = 0
    while waiters:
        done, pending = await asyncio.wait(waiters, timeout=5, return_when="FIRST_COMPLETED")
        assert len(done) == 1  # one holder at a time
        holders += 1
        await lock.release(done.pop().result(), landed=True)
        waiters = list(pending)
    assert holders == 3


async def test_releasing_twice_does_not_free_the_next_holder(lock: FlightLock) -> None:
    first = await lock.acquire(KEY)
    await lock.release(first, landed=True)
    second = await lock.acquire(KEY)
    await lock.release(first, landed=True)  # stale: must not let a third in
    third = asyncio.create_task(lock.acquire(KEY))
    await _settle()
    assert not third.done()
    await lock.release(second, landed=True)
    await lock.release(await asyncio.wait_for(third, 5), landed=True)


# --- what only the fcntl adapter promises: exclusive across the processes of a machine -----

_HOLDER = """
import fcntl, os, sys
from proxy.stores.flight_locks import key_offset
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, key_offset(sys.argv[2]))
print("held", flush=True)
sys.stdin.readline()  # hold until told; exiting drops the lock
"""


async def _holding(path: Path) -> asyncio.subprocess.Process:
    """A process that takes KEY's byte of `path`, says "held", and keeps it until told."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(path), KEY,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip


async def test_a_key_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "flights.lock"
    holder = await _holding(path)
    assert holder.stdin is not None and holder.stdout is not None
    lock = FcntlFlightLock(path)
    try:
        assert await holder.stdout.readline() == b"held\n"
        other = await lock.acquire(OTHER)  # another key: not blocked
        assert not other.waited
        acquire = asyncio.create_task(lock.acquire(KEY))
        await _settle()
        assert not acquire.done()
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        await holder.wait()
        hold = await asyncio.wait_for(acquire, 10)
        assert hold.waited
        await lock.release(hold, landed=True)
        await lock.release(other, landed=True)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        lock.close()


_TAKER = """
import fcntl, os, sys
from proxy.stores.flight_locks import key_offset
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, key_offset(sys.argv[2]))
print("took", flush=True)
"""


async def test_a_waiter_cancelled_while_another_process_holds_the_key_leaves_it_free(
    tmp_path: Path,
) -> None:
    """The cancelled waiter's thread still gets the byte when the holder lets go; it must let
    it go again, or every other process waits for that key as long as this one lives."""
    path = tmp_path / "flights.lock"
    holder = await _holding(path)
    assert holder.stdin is not None and holder.stdout is not None
    lock = FcntlFlightLock(path)
    taker = None
    try:
        assert await holder.stdout.readline() == b"held\n"
        acquire = asyncio.create_task(lock.acquire(KEY))
        await _settle()
        acquire.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquire
        holder.stdin.write(b"go\n")  # the holder exits: the cancelled waiter's thread gets it
        await holder.stdin.drain()
        await holder.wait()
        taker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _TAKER, str(path), KEY, stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )  # fmt: skip
        assert taker.stdout is not None
        assert await asyncio.wait_for(taker.stdout.readline(), 20) == b"took\n"
        hold = await asyncio.wait_for(lock.acquire(KEY), 10)  # and this process can again
        await lock.release(hold, landed=True)
    finally:
        for proc in (holder, taker):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        lock.close()
