"""The memory tier in front of a remote blob store (S3 in shared mode).

A replica keeps the blobs it recently stored or read in a bounded LRU (`proxy.memory`), as
the embedded gateway keeps recently served blobs: a hot hit costs no S3 GET, and while S3
cannot be reached the images this replica served lately are still served. Blobs are
immutable and verified before they are kept, so nothing kept here goes stale.
"""

from __future__ import annotations

from proxy.memory import BytesLRU
from proxy.ports import BlobFile, BlobStore, StoreStats

__all__ = ["MemoryTierBlobStore"]


class MemoryTierBlobStore:
    """`BlobStore` over `inner`, with the last `memory` bytes of blobs kept in process."""

    def __init__(self, inner: BlobStore, memory: BytesLRU) -> None:
        self.inner = inner
        self.memory = memory

    async def put(self, data: bytes) -> str:
        sha256 = await self.inner.put(data)
        self.memory.put(sha256, data)  # a miss's images are its replica's next hits
        return sha256

    async def get(self, sha256: str) -> bytes | None:
        kept = self.memory.get(sha256)
        if kept is not None:
            return kept
        data = await self.inner.get(sha256)  # verified against its address by the store
        if data is not None:
            self.memory.put(sha256, data)
        return data

    async def open(self, sha256: str) -> BlobFile | None:
        return await self.inner.open(sha256)

    async def ping(self) -> None:
        await self.inner.ping()

    async def stats(self) -> StoreStats:
        return await self.inner.stats()
