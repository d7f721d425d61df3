"""`LimitStore` on Redis: token buckets shared by every replica, one atomic script a take.

The decision stays in the pure core. The script (run with EVALSHA; redis-py loads it again
on NOSCRIPT, e.g. after a restart or SCRIPT FLUSH) only does what must be atomic: refill
each bucket to `now` exactly as `policies.ratelimit._refill` does, take every cost if every
bucket can pay (the core's predicate: cost <= burst and tokens + 1e-9 >= cost), store the
buckets, and return them as they were before the take. `policies.ratelimit.take_all` over
those buckets then builds the same `Allowed` / `Limited` / `Oversized` as in one process.

Floats cross as text written with 17 significant digits (exact for a double) both ways,
so Lua and Python compute on the same numbers. `now` is the caller's clock, never Redis
TIME: the gateway's clock decides, as in the embedded store. A bucket key
(`{prefix}bucket:{key}`) expires a second after the bucket would be full again by that
clock (a missing bucket is a full one), counting from its `updated`, which a clock that
went back leaves ahead of `now`: so a step back never mints tokens while the key lives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis

from policies.ratelimit import Allowed, Bucket, Limited, Oversized, Rate, take_all
from proxy.stores.redis_connection import redis_unavailable

__all__ = ["RedisLimitStore"]

# KEYS: the buckets. ARGV: now, then (capacity, tokens per second, cost) per bucket.
# Returns {allowed (1/0), tokens_1, updated_1, tokens_2, ...} as refilled, before the take.
_TAKE_ALL: Final = """
local now = tonumber(ARGV[1])
local caps, speeds, costs, tokens, updated = {}, {}, {}, {}, {}
local ok = 1
for i = 1, #KEYS do
  local cap, speed, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  local t, u = cap, now
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local ts, us = string.match(raw, '^(%S+) (%S+)$')
    t, u = tonumber(ts), tonumber(us)
    t = math.min(cap, math.max(0, t) + math.max(0, now - u) * speed)
    u = math.max(u, now)
  end
  caps[i], speeds[i], costs[i], tokens[i], updated[i] = cap, speed, cost, t, u
  if cost > cap or t + 1e-9 < cost then ok = 0 end
end
local out = {ok}
for i = 1, #KEYS do
  out[2*i], out[2*i+1] = string.format('%.17g', tokens[i]), string.format('%.17g', updated[i])
  local left = tokens[i]
  if ok == 1 then left = math.max(0, left - costs[i]) end
  local full_ms = math.ceil((updated[i] - now + (caps[i] - left) / speeds[i]) * 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.17g %.17g', left, updated[i]), 'PX', full_ms)
end
return out
"""


class RedisLimitStore:
    """Buckets under `prefix` in the Redis `client` (which the caller opens and closes)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._take_all = client.register_script(_TAKE_ALL)

    async def take_all(
        self, takes: Sequence[tuple[str, Rate, int]], now: float
    ) -> Allowed | Limited | Oversized:
        """Take each cost from its bucket, all or nothing, in one script run."""
        if not takes:
            raise ValueError("take_all needs at least one bucket")
        if any(cost < 0 for _, _, cost in takes):
            raise ValueError(f"a rate-limit cost must be >= 0, not {[c for *_, c in takes]}")
        args: list[str | int] = [repr(float(now))]
        for _, rate, cost in takes:
            args += [rate.capacity, repr(rate.per_second), cost]
        keys = [f"{self._prefix}bucket:{key}" for key, _, _ in takes]
        with redis_unavailable(self._redis):
            reply = await self._take_all(keys=keys, args=args)
        allowed, numbers = int(reply[0]), [float(n) for n in reply[1:]]
        before = [Bucket(numbers[2 * i], numbers[2 * i + 1]) for i in range(len(takes))]
        _, decision = take_all(
            [(b, rate, cost) for b, (_, rate, cost) in zip(before, takes, strict=True)], now
        )
        # The script and the core decide on the same numbers with the same predicate.
        assert isinstance(decision, Allowed) == bool(allowed), (decision, allowed)
        return decision
