"""`BlobTransfer` and `EntryTransfer` over the embedded diskcache directories.

Values are read and written through the gateway's own stores (`DiskBlobStore` verifies every
blob it returns and bounds the target by its `cache.max_bytes`; `DiskEntryStore` reads and
writes the entry JSON), opened with the settings the gateway uses, so that diskcache's stored
settings stay as the gateway left them. What they cannot do, list their keys, is one indexed
query on diskcache's `Cache` table through a connection of our own (the schema `disk.py`
relies on already, pinned by diskcache <6).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Final

from proxy.migration.records import EntryRecord, Loaded
from proxy.stores.disk import DiskBlobStore, DiskEntryStore

__all__ = ["DiskBlobTransfer", "DiskEntryTransfer"]

_PAGE: Final = 500
_KEYS_AFTER: Final = "SELECT key FROM Cache WHERE raw = 1 AND key > ? ORDER BY key LIMIT ?"
_EXPIRING_AFTER: Final = (
    "SELECT key, expire_time FROM Cache WHERE raw = 1 AND key > ? ORDER BY key LIMIT ?"
)
_COUNT: Final = "SELECT COUNT(*) FROM Cache"
_SHA_LENGTH: Final = 64


class _CacheIndex:
    """A connection to a diskcache directory's index, for listing keys in pages."""

    def __init__(self, directory: Path) -> None:
        self._db = sqlite3.connect(directory / "cache.db", timeout=30.0, check_same_thread=False)

    def page(self, sql: str, after: str) -> list[tuple[str, float | None]]:
        rows = self._db.execute(sql, (after, _PAGE)).fetchall()
        return [(str(r[0]), r[1] if len(r) > 1 else None) for r in rows]

    def count(self) -> int:
        return int(self._db.execute(_COUNT).fetchone()[0])

    def present(self, keys: Sequence[str]) -> set[str]:
        marks = ", ".join("?" * len(keys))
        sql = f"SELECT key FROM Cache WHERE raw = 1 AND key IN ({marks})"  # noqa: S608  # only placeholders
        return {str(r[0]) for r in self._db.execute(sql, list(keys))}

    def close(self) -> None:
        self._db.close()


async def _pages(index: _CacheIndex, sql: str) -> AsyncIterator[list[tuple[str, float | None]]]:
    after = ""
    while True:
        page = await asyncio.to_thread(index.page, sql, after)
        if not page:
            return
        yield page
        after = page[-1][0]


class DiskBlobTransfer:
    """Blobs of a `DiskBlobStore`, by sha256 in key order."""

    def __init__(self, store: DiskBlobStore) -> None:
        self._store = store
        self._index = _CacheIndex(store.directory)
        self.location = f"embedded blobs {store.directory.resolve()}"

    async def count(self) -> int | None:
        return await asyncio.to_thread(self._index.count)

    async def dump(self) -> AsyncIterator[str]:
        async for page in _pages(self._index, _KEYS_AFTER):
            for sha, _ in page:
                if len(sha) == _SHA_LENGTH:
                    yield sha

    async def missing(self, shas: Sequence[str]) -> list[str]:
        held = await asyncio.to_thread(self._index.present, shas)
        return [sha for sha in shas if sha not in held]

    async def read(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self._store.get, sha256)

    async def load(self, blobs: Sequence[bytes], *, write: bool = True) -> Loaded:
        if write:
            for data in blobs:
                await asyncio.to_thread(self._store.put, data)
        return Loaded(copied=len(blobs))

    def close(self) -> None:
        self._index.close()
        self._store.close()


def _split(name: str) -> tuple[str, int] | None:
    key, _, index = name.rpartition("/")
    return (key, int(index)) if key and index.isdigit() else None


class DiskEntryTransfer:
    """Entries of a `DiskEntryStore`, in key order; a TTL moves as its absolute expiry."""

    def __init__(self, store: DiskEntryStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._index = _CacheIndex(store.directory)
        self._clock = clock
        self.location = f"embedded entries {store.directory.resolve()}"

    async def count(self) -> int | None:
        return await asyncio.to_thread(self._index.count)

    async def dump(self) -> AsyncIterator[EntryRecord]:
        async for page in _pages(self._index, _EXPIRING_AFTER):
            found = await asyncio.to_thread(self._read, page)
            for record in found:
                yield record

    def _read(self, page: list[tuple[str, float | None]]) -> list[EntryRecord]:
        """The readable, unexpired entries of a page (others are not worth copying)."""
        found: list[EntryRecord] = []
        for name, expires_at in page:
            address = _split(name)
            entry = None if address is None else self._store.get(*address)
            if address is not None and entry is not None:
                found.append(EntryRecord(address[0], address[1], entry, expires_at))
        return found

    async def load(self, records: Sequence[EntryRecord], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._load, records, write)

    def _load(self, records: Sequence[EntryRecord], write: bool) -> Loaded:
        now = self._clock()
        copied = present = expired = 0
        for r in records:
            if self._store.get(r.key, r.index) is not None:
                present += 1
            elif r.expires_at is not None and r.expires_at <= now:
                expired += 1
            else:
                if write:
                    ttl = None if r.expires_at is None else r.expires_at - now
                    self._store.put(r.key, r.index, r.entry, ttl=ttl)
                copied += 1
        return Loaded(copied, present, {"expired": expired} if expired else {})

    def close(self) -> None:
        self._index.close()
        self._store.close()
