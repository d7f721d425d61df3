"""`AsyncBlobStore` and `AsyncEntryStore` over the synchronous stores (disk or memory), for
the service once it is rewired onto the async ports.

Blobs are files (a put writes and fsyncs one; a get reads and verifies megabytes), so they
move in a thread. An entry is one small SQLite read or write in diskcache: inline, as the
hit path does today (an `async def` that never awaits costs well under a microsecond)."""

from __future__ import annotations

import asyncio

from policies.models import Entry
from proxy.ports import BlobFile, BlobStore, EntryStore, StoreStats

__all__ = ["InlineEntryStore", "ThreadedBlobStore"]


class ThreadedBlobStore:
    def __init__(self, store: BlobStore) -> None:
        self.sync = store  # the synchronous store, for code not yet rewired

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.sync.put, data)

    async def get(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self.sync.get, sha256)

    async def open(self, sha256: str) -> BlobFile | None:
        return await asyncio.to_thread(self.sync.open, sha256)

    async def ping(self) -> None:
        await asyncio.to_thread(self.sync.ping)

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.sync.stats)


class InlineEntryStore:
    def __init__(self, store: EntryStore) -> None:
        self.sync = store

    async def get(self, key: str, index: int) -> Entry | None:
        return self.sync.get(key, index)

    async def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None:
        self.sync.put(key, index, entry, ttl=ttl)

    async def delete(self, key: str, index: int) -> None:
        self.sync.delete(key, index)

    async def ping(self) -> None:
        await asyncio.to_thread(self.sync.ping)

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.sync.stats)
