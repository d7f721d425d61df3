"""Dict-backed stores for unit tests of the service: same contract, nothing on disk."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from policies.models import Entry
from proxy.ports import BlobFile, StoreStats

__all__ = ["MemoryBlobStore", "MemoryEntryStore"]


class MemoryBlobStore:
    """sha256 -> bytes in a dict. Not file-backed: `open` always returns None."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(sha, bytes(data))
        return sha

    def get(self, sha256: str) -> bytes | None:
        return self._blobs.get(sha256)

    def open(self, sha256: str) -> BlobFile | None:
        return None

    def stored_base64(self, sha256: str) -> bytes | None:
        return None  # nothing is kept: every request encodes (tests only)

    def keep_base64(self, sha256: str, text: bytes) -> None:
        return None

    def discard(self, sha256: str) -> bool:
        """Forget a blob, as an eviction would (for tests of entries whose blob is gone)."""
        return self._blobs.pop(sha256, None) is not None

    def stats(self) -> StoreStats:
        return StoreStats(items=len(self._blobs), bytes=sum(map(len, self._blobs.values())))

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class MemoryEntryStore:
    """(key, index) -> Entry in a dict; a `ttl` expires against the injected `clock`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, int], tuple[Entry, float | None]] = {}

    def get(self, key: str, index: int) -> Entry | None:
        found = self._entries.get((key, index))
        if found is None:
            return None
        entry, expires_at = found
        if expires_at is not None and self._clock() >= expires_at:
            self._entries.pop((key, index), None)
            return None
        return entry

    def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None:
        expires_at = None if ttl is None else self._clock() + ttl
        self._entries[(key, index)] = (entry, expires_at)

    def delete(self, key: str, index: int) -> None:
        self._entries.pop((key, index), None)

    def stats(self) -> StoreStats:
        return StoreStats(items=len(self._entries), bytes=0)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
