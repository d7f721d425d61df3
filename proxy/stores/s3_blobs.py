"""Shared mode's BlobStore: sha256 -> image bytes as objects in one S3-compatible bucket.

An object's name is `prefix + sha256` and nothing else, so every replica (and
`imagegate migrate`) finds a blob by its address alone, and two writers of the same bytes
write the same object. Objects are written once: a conditional put (`If-None-Match: *`)
that S3 refuses with 412 when the name is taken, which is success, since the name is the
bytes' hash. That saves the HEAD a HEAD-then-put would cost on every store, and has no
window between the check and the write. (A server that ignores the condition overwrites
the object with the same bytes: harmless.)

Reads are verified: the bytes of a `get` are hashed and compared with their name. A corrupt
object is deleted (only if it is still the object that was read: `If-Match` its ETag, so a
good copy written meanwhile survives) and reported missing; the service then makes the
image again. What this process healed is `stats().healed`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final

from botocore.exceptions import ClientError

from policies.models import CONTENT_TYPES
from proxy.imaging import sniff
from proxy.ports import BlobFile, StoreStats
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.s3_client import (
    DEFAULT_TIMEOUT,
    S3Location,
    error_code,
    missing_bucket,
    open_s3_client,
    s3_unavailable,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["S3BlobStore", "open_s3_blobs"]

_SHA: Final = re.compile(r"[0-9a-f]{64}")
_HASH_IN_THREAD: Final = 1024 * 1024  # bigger blobs are hashed off the event loop
_CONFLICT_TRIES: Final = 3  # S3's 409: another conditional put of the name is in flight
_STATS_PAGES: Final = 10  # LIST pages (1,000 names each) that one `stats()` may read


async def _sha256(data: bytes) -> str:
    if len(data) < _HASH_IN_THREAD:
        return hashlib.sha256(data).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())


class S3BlobStore:
    """`AsyncBlobStore` on the bucket and prefix of `location`, through `client`.

    `stats()` lists the prefix, at most `stats_pages` LIST requests (1,000 objects each):
    exact up to that many objects, a lower bound past it (S3 keeps no cheap count; a
    replica's own counters would know only its own writes). `evictions` is always 0: S3
    evicts nothing (a lifecycle rule that expires objects only turns hits into misses).
    """

    def __init__(
        self,
        client: S3Client,
        location: S3Location,
        *,
        stats_pages: int = _STATS_PAGES,
        stack: AsyncExitStack | None = None,
    ) -> None:
        self._client = client
        self.location = location
        self._stats_pages = stats_pages
        self._stack = stack  # what `aclose` closes: the client, when `open_s3_blobs` made it
        self.healed = 0

    def name(self, sha256: str) -> str:
        """The object name of a blob: the prefix and the sha256, nothing else."""
        return self.location.prefix + sha256

    async def put(self, data: bytes) -> str:
        """Store `data` unless its object exists already; return its sha256 hex."""
        sha = await _sha256(data)
        kind = sniff(data)
        content_type = CONTENT_TYPES.get(kind, "application/octet-stream")
        for attempt in range(1, _CONFLICT_TRIES + 1):
            with s3_unavailable(self.location):
                try:
                    await self._client.put_object(
                        Bucket=self.location.bucket,
                        Key=self.name(sha),
                        Body=data,
                        ContentType=content_type,
                        IfNoneMatch="*",
                    )
                    return sha
                except ClientError as exc:
                    code = error_code(exc)
                    if code == "PreconditionFailed":  # there already: same name, same bytes
                        return sha
                    if code != "ConditionalRequestConflict" or attempt == _CONFLICT_TRIES:
                        raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def get(self, sha256: str) -> bytes | None:
        """The verified bytes of `sha256`, or None (missing, or corrupt and now deleted)."""
        if _SHA.fullmatch(sha256) is None:
            return None
        with s3_unavailable(self.location):
            try:
                answer = await self._client.get_object(
                    Bucket=self.location.bucket, Key=self.name(sha256)
                )
            except ClientError as exc:
                if error_code(exc) == "NoSuchKey":
                    return None
                raise
            async with answer["Body"] as body:
                data = await body.read()
        if await _sha256(data) == sha256:
            return data
        await self._heal(sha256, answer["ETag"])
        return None

    async def get_base64(self, sha256: str) -> bytes | None:
        """Encoded from `get`: S3 keeps only the image (a replica's memory tier keeps the
        text of hot blobs, `proxy.stores.blob_memory`)."""
        data = await self.get(sha256)
        return None if data is None else base64.b64encode(data)

    async def open(self, sha256: str) -> BlobFile | None:
        """Always None: S3 objects are not files (the route reads them with `get`)."""
        return None

    async def ping(self) -> None:
        """HeadBucket: raises `BackendUnavailable` naming the bucket when it is missing,
        refused or unreachable."""
        with s3_unavailable(self.location):
            try:
                await self._client.head_bucket(Bucket=self.location.bucket)
            except ClientError as exc:
                if error_code(exc) in ("404", "NoSuchBucket"):
                    raise BackendUnavailable("s3", missing_bucket(self.location)) from exc
                raise

    async def stats(self) -> StoreStats:
        items = size = 0
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.location.bucket,
            Prefix=self.location.prefix,
            PaginationConfig={"MaxItems": self._stats_pages * 1000, "PageSize": 1000},
        )
        start = len(self.location.prefix)
        with s3_unavailable(self.location):
            async for page in pages:
                for obj in page.get("Contents", []):
                    if _SHA.fullmatch(obj.get("Key", "")[start:]) is not None:
                        items += 1
                        size += obj.get("Size", 0)
        return StoreStats(items=items, bytes=size, healed=self.healed)

    async def aclose(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def _heal(self, sha: str, etag: str) -> None:
        """Delete the corrupt object that was read, unless it changed since."""
        with s3_unavailable(self.location):
            try:
                await self._client.delete_object(
                    Bucket=self.location.bucket, Key=self.name(sha), IfMatch=etag
                )
            except ClientError as exc:
                if error_code(exc) in ("PreconditionFailed", "NoSuchKey"):
                    return  # replaced or deleted meanwhile: not ours to heal
                if error_code(exc) != "NotImplemented":
                    raise
                # A server without conditional deletes: delete it as it is.
                await self._client.delete_object(Bucket=self.location.bucket, Key=self.name(sha))
        self.healed += 1


async def open_s3_blobs(
    location: S3Location, *, reply_timeout: float = DEFAULT_TIMEOUT, stats_pages: int = _STATS_PAGES
) -> S3BlobStore:
    """The blob store at `location`, its bucket checked (HeadBucket): a missing bucket,
    refused credentials or an unreachable endpoint raise `BackendUnavailable` naming it, so
    a replica fails at start with one line. `aclose()` closes the client."""
    stack = AsyncExitStack()
    try:
        client = await open_s3_client(location, stack, reply_timeout=reply_timeout)
        store = S3BlobStore(client, location, stats_pages=stats_pages, stack=stack)
        await store.ping()
    except BaseException:
        await stack.aclose()
        raise
    return store
