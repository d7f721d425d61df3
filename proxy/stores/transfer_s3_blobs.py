"""`BlobTransfer` over shared mode's S3 blob store (`proxy.stores.s3_blobs`).

Dump: ListObjectsV2 under the prefix (names are `prefix + sha256`, in S3's key order).
Missing: a HEAD per name, a page's at once. Read and load: the gateway's own `S3BlobStore`
(`get` verifies the bytes against their name; `put` writes once, conditionally). Connection
failures arrive as `BackendUnavailable` (mapped by `s3_unavailable`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Final

from botocore.exceptions import ClientError

from proxy.migration.records import Loaded
from proxy.stores.s3_blobs import S3BlobStore
from proxy.stores.s3_client import S3Location, error_code, s3_unavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["S3BlobTransfer"]

_SHA: Final = re.compile(r"[0-9a-f]{64}")


class S3BlobTransfer:
    """Blobs of `location`'s bucket and prefix, through `client` (the caller closes it)."""

    def __init__(self, client: S3Client, location: S3Location) -> None:
        self._client = client
        self._where = location
        self._store = S3BlobStore(client, location)
        self.location = f"s3 blobs {location.where}/{location.bucket}/{location.prefix}"

    async def count(self) -> int | None:
        return None  # S3 keeps no count; listing it all twice would double the run's LISTs

    async def dump(self) -> AsyncIterator[str]:
        start = len(self._where.prefix)
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._where.bucket, Prefix=self._where.prefix
        )
        with s3_unavailable(self._where):
            async for page in pages:
                names = [obj.get("Key", "")[start:] for obj in page.get("Contents", [])]
                for sha in names:
                    if _SHA.fullmatch(sha) is not None:
                        yield sha

    async def missing(self, shas: Sequence[str]) -> list[str]:
        held = await asyncio.gather(*(self._has(sha) for sha in shas))
        return [sha for sha, there in zip(shas, held, strict=True) if not there]

    async def _has(self, sha: str) -> bool:
        with s3_unavailable(self._where):
            try:
                await self._client.head_object(Bucket=self._where.bucket, Key=self._store.name(sha))
            except ClientError as exc:
                if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    async def read(self, sha256: str) -> bytes | None:
        return await self._store.get(sha256)

    async def load(self, blobs: Sequence[bytes], *, write: bool = True) -> Loaded:
        if write:
            for data in blobs:
                await self._store.put(data)
        return Loaded(copied=len(blobs))
