"""`AsyncEntryStore` on Redis: (request key, index) -> Entry, shared by every replica.

Each entry is one string key, `{prefix}entry:{key}:{index}`, holding the same compact JSON
as the disk store (`proxy.stores.entry_json`); a `ttl` is the key's own expiry, so Redis
drops old entries without a sweeper.

`stats()` must stay cheap at any size (it runs on every /metrics scrape), so it never
scans the keyspace. Each put and delete is one script that also keeps the entry's size in
a hash (`{prefix}entries:sizes`, whose length is `items`) and a byte counter
(`{prefix}entries:bytes`), and an expiring entry's deadline in a sorted set
(`{prefix}entries:expiry`). Redis expires the entry itself without telling anyone, so
`stats()` first forgets the entries whose deadline has passed, at most `_SWEEP` per call
(amortized: a scrape every few seconds keeps up with thousands of expiries a second).
`bytes` counts the JSON values, not Redis's own overhead per key."""

from __future__ import annotations

import math
from typing import Final

from redis.asyncio import Redis

from policies.models import Entry
from proxy.ports import StoreStats
from proxy.stores.entry_json import dump_entry, load_entry
from proxy.stores.redis_connection import redis_unavailable

__all__ = ["RedisEntryStore"]

_SWEEP: Final = 1_000  # expired entries forgotten per stats() call, at most

# KEYS: entry, sizes, expiry, bytes. ARGV: value, ttl in ms ("0": none).
# The deadline is Redis's own clock (TIME), the clock PX expires the key by.
_PUT: Final = """
local old = tonumber(redis.call('HGET', KEYS[2], KEYS[1]) or '0')
local size = string.len(ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], now + ttl, KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
end
redis.call('HSET', KEYS[2], KEYS[1], size)
redis.call('INCRBY', KEYS[4], size - old)
return 1
"""

# KEYS: entry, sizes, expiry, bytes.
_DELETE: Final = """
redis.call('DEL', KEYS[1])
local old = redis.call('HGET', KEYS[2], KEYS[1])
if old then
  redis.call('HDEL', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
  redis.call('DECRBY', KEYS[4], tonumber(old))
end
return 1
"""

# KEYS: sizes, expiry, bytes. ARGV: how many to sweep at most. Returns {items, bytes}.
# The swept entry keys are not in KEYS: fine on one Redis, the reason Cluster is not supported.
_STATS: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, entry in ipairs(due) do
  if redis.call('EXISTS', entry) == 0 then
    local size = tonumber(redis.call('HGET', KEYS[1], entry) or '0')
    redis.call('HDEL', KEYS[1], entry)
    redis.call('DECRBY', KEYS[3], size)
    redis.call('ZREM', KEYS[2], entry)
  end
end
return {redis.call('HLEN', KEYS[1]), tonumber(redis.call('GET', KEYS[3]) or '0')}
"""


class RedisEntryStore:
    """Entries under `prefix` in the Redis `client` (which the caller opens and closes)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._index = (
            f"{prefix}entries:sizes",
            f"{prefix}entries:expiry",
            f"{prefix}entries:bytes",
        )
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
        self._stats = client.register_script(_STATS)

    def _key(self, key: str, index: int) -> str:
        return f"{self._prefix}entry:{key}:{index}"

    async def get(self, key: str, index: int) -> Entry | None:
        with redis_unavailable(self._redis):
            raw = await self._redis.get(self._key(key, index))
        return None if raw is None else load_entry(raw)

    async def get_many(self, key: str, n: int) -> list[Entry | None]:
        """Indexes 0..n-1 of `key` in one round trip (MGET): the hit path of an n-image
        request. An entry that is missing or unreadable is None."""
        if n <= 0:
            return []
        with redis_unavailable(self._redis):
            raws: list[bytes | str | None] = await self._redis.mget(
                [self._key(key, i) for i in range(n)]
            )
        return [None if raw is None else load_entry(raw) for raw in raws]

    async def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None:
        """Store `entry`; with a `ttl` (seconds) it expires then. A ttl <= 0 has expired
        already, so the entry is only removed."""
        if ttl is not None and ttl <= 0:
            await self.delete(key, index)
            return
        ttl_ms = 0 if ttl is None else max(1, math.ceil(ttl * 1000))
        with redis_unavailable(self._redis):
            await self._put(keys=[self._key(key, index), *self._index],
                            args=[dump_entry(entry), ttl_ms])  # fmt: skip

    async def delete(self, key: str, index: int) -> None:
        with redis_unavailable(self._redis):
            await self._delete(keys=[self._key(key, index), *self._index])

    async def ping(self) -> None:
        with redis_unavailable(self._redis):
            await self._redis.ping()

    async def stats(self) -> StoreStats:
        with redis_unavailable(self._redis):
            items, size = await self._stats(keys=list(self._index), args=[_SWEEP])
        return StoreStats(items=int(items), bytes=int(size))
