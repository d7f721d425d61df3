"""`EntryTransfer` over the shared-mode Redis entry store (`proxy.stores.redis_entries`).

Dump: SCAN over `{prefix}entry:*` (no order across runs is needed: every load skips what the
target holds), each page's values and absolute expiries (PEXPIRETIME, Redis 7) in one
pipeline. Load: the page's keys in one MGET, then the gateway's own `RedisEntryStore.put` for
those missing, so the store's size index and expiry set stay right. Connection failures
arrive as `BackendUnavailable` (mapped by `redis_unavailable`), which the command reports.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from redis.asyncio import Redis

from proxy.migration.records import EntryRecord, Loaded
from proxy.stores.entry_json import load_entry
from proxy.stores.redis_connection import redis_address, redis_unavailable
from proxy.stores.redis_entries import RedisEntryStore

__all__ = ["RedisEntryTransfer"]

_PAGE: Final = 500


class RedisEntryTransfer:
    """Entries under `prefix` of `client`, read and written as `RedisEntryStore` does."""

    def __init__(self, client: Redis, prefix: str, clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._prefix = prefix
        self._store = RedisEntryStore(client, prefix)
        self._clock = clock
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self.location = f"redis entries {redis_address(client)}/{db} {prefix}"

    def _name(self, key: str, index: int) -> str:
        return f"{self._prefix}entry:{key}:{index}"

    def _address(self, name: str) -> tuple[str, int] | None:
        key, _, index = name[len(self._prefix) + len("entry:") :].rpartition(":")
        return (key, int(index)) if key and index.isdigit() else None

    async def count(self) -> int | None:
        with redis_unavailable(self._redis):
            return int(await self._redis.hlen(f"{self._prefix}entries:sizes"))

    async def dump(self) -> AsyncIterator[EntryRecord]:
        cursor: int = 0
        while True:
            with redis_unavailable(self._redis):
                cursor, names = await self._redis.scan(
                    cursor, match=f"{self._prefix}entry:*", count=_PAGE
                )
                page = await self._read([_text(n) for n in names])
            for record in page:
                yield record
            if cursor == 0:
                return

    async def _read(self, names: Sequence[str]) -> list[EntryRecord]:
        """The readable entries of `names` with their expiry (gone meanwhile: left out)."""
        if not names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.pexpiretime(name)
        replies = await pipe.execute()
        found: list[EntryRecord] = []
        for n, name in enumerate(names):
            raw, expires_ms = replies[2 * n], int(replies[2 * n + 1])
            address = self._address(name)
            entry = None if raw is None or address is None else load_entry(raw)
            if entry is not None and address is not None and expires_ms != -2:
                expires_at = None if expires_ms < 0 else expires_ms / 1000
                found.append(EntryRecord(address[0], address[1], entry, expires_at))
        return found

    async def load(self, records: Sequence[EntryRecord], *, write: bool = True) -> Loaded:
        if not records:
            return Loaded()
        with redis_unavailable(self._redis):
            held = await self._redis.mget([self._name(r.key, r.index) for r in records])
        now = self._clock()
        copied = present = expired = 0
        for record, raw in zip(records, held, strict=True):
            if raw is not None and load_entry(raw) is not None:
                present += 1
            elif record.expires_at is not None and record.expires_at <= now:
                expired += 1
            else:
                if write:
                    ttl = None if record.expires_at is None else record.expires_at - now
                    await self._store.put(record.key, record.index, record.entry, ttl=ttl)
                copied += 1
        return Loaded(copied, present, {"expired": expired} if expired else {})


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name
