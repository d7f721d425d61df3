"""The memory tier in front of a remote blob store (S3 in shared mode).

A replica keeps the blobs it recently stored or read in a bounded LRU (`proxy.memory`), as
the embedded gateway keeps recently served blobs: a hot hit costs no S3 GET, and while S3
cannot be reached the images this replica served lately are still served. Blobs are
immutable and verified before they are kept, so nothing kept here goes stale.
"""

from __future__ import annotations

from proxy.memory import B64Cache, BytesLRU
from proxy.ports import BlobFile, BlobStore, StoreStats

__all__ = ["MemoryTierBlobStore"]


class MemoryTierBlobStore:
    """`BlobStore` over `inner`, with the last `memory` bytes of blobs kept in process."""

    def __init__(self, inner: BlobStore, memory: BytesLRU, text: B64Cache | None = None) -> None:
        self.inner = inner
        self.memory = memory
        self.text = text or B64Cache(0)  # the base64 of hot blobs

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

    async def get_base64(self, sha256: str) -> bytes | None:
        """Encoded from the bytes this tier holds or fetches, and kept in `text`: a hot blob
        is not encoded again (its presence is still `get`'s, as for a raw read)."""
        data = await self.get(sha256)
        return None if data is None else self.text.encode(sha256, data)

    async def ping(self) -> None:
        await self.inner.ping()

    async def stats(self) -> StoreStats:
        return await self.inner.stats()
