"""`FlightLock` on Redis: one leader per request key across every replica, with a lease.

The leader holds `{prefix}flight:{key}` = its random token, set with NX and a lease (PX).
While it holds the key a task renews the lease every `renew_every` seconds (a third of the
lease by default), so a slow upstream call keeps it; a leader that dies stops renewing and
its lease runs out. Release deletes the key only if it still holds its own token (a
compare-and-delete script: an expired lease already taken by another is left alone) and
publishes the key on `{prefix}flights`, which wakes the waiters on every replica at once
(`redis_flight_wakeups`). Waiters also retry every `poll` seconds: that is how they take
over from a dead leader, and the safety net for a lost message. Whoever gets the key after
waiting gets `FlightHold(waited=True)`: it looks in the cache before generating.

Within one process, flights of one key queue on an asyncio lock first (as `MemoryFlightLock`
does), so only one of them at a time talks to Redis for that key.

Lease: 15 s by default (a dead replica's waiters take over within about that plus `poll`);
`lease`, `renew_every` and `poll` are constructor arguments (tests use ~0.2 s leases)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis

from proxy.ports import FlightHold
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.redis_connection import redis_unavailable
from proxy.stores.redis_flight_wakeups import Wakeups

__all__ = ["DEFAULT_LEASE", "RedisFlightLock"]

DEFAULT_LEASE: Final = 15.0  # seconds
DEFAULT_POLL: Final = 1.0  # seconds between a waiter's retries without a wake-up

# KEYS: the lease. ARGV: token, channel, request key. Deletes only our own lease; publishes
# unless another holds it now (a lapsed lease nobody took: its waiters should try now).
_RELEASE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
elseif holder then
  return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: the lease. ARGV: token, lease in ms. Extends only our own lease.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@dataclass
class _Local:
    """Flights of one key inside this process: they queue here before asking Redis."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class RedisFlightLock:
    """Flight leases under `prefix` in the Redis `client` (which the caller opens and
    closes; `aclose` stops this lock's renewals and its pub/sub listener)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        lease: float = DEFAULT_LEASE,
        renew_every: float | None = None,
        poll: float = DEFAULT_POLL,
    ) -> None:
        """`renew_every`: seconds between automatic renewals (default lease / 3); 0 turns
        them off, so the holder must call `renew` itself (as tests of a dead leader do)."""
        if lease <= 0 or poll <= 0:
            raise ValueError(f"lease and poll must be > 0, not {lease} and {poll}")
        self._redis = client
        self._prefix = prefix
        self._lease_ms = max(1, math.ceil(lease * 1000))
        self._renew_every = lease / 3 if renew_every is None else renew_every
        self._poll = poll
        self._channel = f"{prefix}flights"
        self._wakeups = Wakeups(client, self._channel)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._locals: dict[str, _Local] = {}
        self._held: dict[str, asyncio.Task[None] | None] = {}  # token -> its renewal task
        self._cleanups: set[asyncio.Task[None]] = set()

    def _lease_key(self, key: str) -> str:
        return f"{self._prefix}flight:{key}"

    async def acquire(self, key: str) -> FlightHold:
        local = self._locals.setdefault(key, _Local())
        local.users += 1
        try:
            waited = local.lock.locked()
            await local.lock.acquire()
        except BaseException:
            self._leave(key, local)
            raise
        token = secrets.token_hex(16)
        try:
            waited = await self._take(key, token) or waited
        except BaseException:
            local.lock.release()
            self._leave(key, local)
            self._abandon(key, token)
            raise
        self._held[token] = self._start_renewing(FlightHold(key, waited, token))
        return FlightHold(key, waited, token)

    async def _take(self, key: str, token: str) -> bool:
        """Hold the lease for `token`; whether that meant waiting for another holder."""
        if await self._try(key, token):
            return False
        async with self._wakeups.watch(key, ready_within=self._poll) as woken:
            while not await self._try(key, token):  # subscribed now: try once more first
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await woken.wait()
                woken.clear()
        return True

    def _abandon(self, key: str, token: str) -> None:
        """A cancelled acquire (its client went away) may have won the lease just as it
        was cancelled: let it go in the background, or the key would stay taken until the
        lease ran out. Redis down: nothing to do, the lease runs out by itself."""
        task = asyncio.create_task(self._let_go(key, token))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _let_go(self, key: str, token: str) -> None:
        with contextlib.suppress(BackendUnavailable), redis_unavailable(self._redis):
            await self._release(keys=[self._lease_key(key)], args=[token, self._channel, key])

    async def _try(self, key: str, token: str) -> bool:
        with redis_unavailable(self._redis):
            return bool(await self._redis.set(self._lease_key(key), token, nx=True,
                                              px=self._lease_ms))  # fmt: skip

    def _start_renewing(self, hold: FlightHold) -> asyncio.Task[None] | None:
        if self._renew_every <= 0:
            return None
        return asyncio.create_task(self._keep(hold), name=f"flight-lease-{hold.key[:12]}")

    async def _keep(self, hold: FlightHold) -> None:
        """Renew until released or lost. Redis down for a moment: try again next time
        (the lease outlasts two missed renewals)."""
        while True:
            await asyncio.sleep(self._renew_every)
            with contextlib.suppress(BackendUnavailable):
                if not await self.renew(hold):
                    return

    async def renew(self, hold: FlightHold) -> bool:
        if hold.token not in self._held:
            return False
        with redis_unavailable(self._redis):
            renewed = await self._renew(keys=[self._lease_key(hold.key)],
                                        args=[hold.token, self._lease_ms])  # fmt: skip
        return bool(renewed)

    async def release(self, hold: FlightHold, *, landed: bool) -> None:
        """Let go and wake every replica's waiters (whether or not it `landed`: a waiter
        looks in the cache and, finding nothing, generates itself)."""
        if hold.token not in self._held:
            return  # not ours, or released twice
        renewal = self._held.pop(hold.token)
        if renewal is not None:
            renewal.cancel()
        local = self._locals[hold.key]
        try:
            with redis_unavailable(self._redis):
                await self._release(keys=[self._lease_key(hold.key)],
                                    args=[hold.token, self._channel, hold.key])  # fmt: skip
        finally:  # Redis down: the lease runs out by itself; this process lets go now
            local.lock.release()
            self._leave(hold.key, local)

    def _leave(self, key: str, local: _Local) -> None:
        local.users -= 1
        if local.users == 0:
            del self._locals[key]

    async def aclose(self) -> None:
        """Stop renewing (held leases then run out) and stop listening."""
        for renewal in self._held.values():
            if renewal is not None:
                renewal.cancel()
        self._held.clear()
        if self._cleanups:
            await asyncio.wait(self._cleanups)
        await self._wakeups.aclose()
