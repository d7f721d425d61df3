"""The disk and memory stores' own (synchronous) types, and the `BlobStore` / `EntryStore`
ports over them.

An entry is one small SQLite read or write in diskcache, and a hit's blob is a page-cached
file: both run inline, as the hit path always has (bench/: the hand-off to a thread cost
1.7x the hit's throughput; an `async def` that never awaits costs well under a
microsecond). A blob put writes and fsyncs a file, and a ping or stats walks the store:
those move to a thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Protocol

from policies.models import Entry
from proxy.ports import BlobFile, StoreStats

__all__ = ["InlineEntryStore", "SyncBlobStore", "SyncEntryStore", "ThreadedBlobStore"]


class SyncBlobStore(Protocol):
    """What `DiskBlobStore` and `MemoryBlobStore` are: `proxy.ports.BlobStore`, blocking."""

    def put(self, data: bytes) -> str: ...

    def get(self, sha256: str) -> bytes | None: ...

    def open(self, sha256: str) -> BlobFile | None: ...

    def stored_base64(self, sha256: str) -> bytes | None:
        """The blob's base64 if the store kept it (`keep_base64`), else None."""
        ...

    def keep_base64(self, sha256: str, text: bytes) -> None: ...

    def ping(self) -> None: ...

    def stats(self) -> StoreStats: ...


class SyncEntryStore(Protocol):
    """What `DiskEntryStore` and `MemoryEntryStore` are: `proxy.ports.EntryStore`, blocking."""

    def get(self, key: str, index: int) -> Entry | None: ...

    def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None: ...

    def delete(self, key: str, index: int) -> None: ...

    def ping(self) -> None: ...

    def stats(self) -> StoreStats: ...


class ThreadedBlobStore:
    """`BlobStore` over a synchronous one: reads inline, writes and walks in a thread."""

    def __init__(self, store: SyncBlobStore) -> None:
        self.sync = store

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self.sync.put, data)

    async def get(self, sha256: str) -> bytes | None:
        return self.sync.get(sha256)

    async def open(self, sha256: str) -> BlobFile | None:
        return self.sync.open(sha256)

    async def get_base64(self, sha256: str) -> bytes | None:
        """The kept text, read inline like a blob; the first time, the blob is read (and
        verified), encoded and its text kept, all in a thread: megabytes of work, once."""
        text = self.sync.stored_base64(sha256)
        if text is not None:
            return text
        return await asyncio.to_thread(self._encode_and_keep, sha256)

    def _encode_and_keep(self, sha256: str) -> bytes | None:
        data = self.sync.get(sha256)
        if data is None:
            return None
        text = base64.b64encode(data)
        # A copy kept to save CPU: when it cannot be written (a full disk, say) the answer
        # stands without it, and the next one encodes and tries again.
        with contextlib.suppress(Exception):
            self.sync.keep_base64(sha256, text)
        return text

    async def ping(self) -> None:
        await asyncio.to_thread(self.sync.ping)

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.sync.stats)

    def close(self) -> None:
        close = getattr(self.sync, "close", None)
        if close is not None:
            close()


class InlineEntryStore:
    """`EntryStore` over a synchronous one: gets and puts inline."""

    def __init__(self, store: SyncEntryStore) -> None:
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

    def close(self) -> None:
        close = getattr(self.sync, "close", None)
        if close is not None:
            close()
