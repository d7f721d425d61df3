"""The AsyncBlobStore and AsyncEntryStore contracts, over the async adapters of every
synchronous store, over the Redis entry store and over the S3 blob store (moto's server,
a bucket per test). The synchronous stores' own suite, with healing, eviction and crashes, is
tests/proxy/test_store_contract.py; S3's own is tests/proxy/test_s3_blobs.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from policies.models import Entry
from proxy.memory import BytesLRU
from proxy.ports import AsyncBlobStore, AsyncEntryStore
from proxy.stores.async_stores import InlineEntryStore, ThreadedBlobStore
from proxy.stores.blob_memory import MemoryTierBlobStore
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.memory import MemoryBlobStore, MemoryEntryStore
from proxy.stores.redis_connection import redis_client
from proxy.stores.redis_entries import RedisEntryStore
from proxy.stores.s3_blobs import open_s3_blobs
from tests.backends.redis import open_redis_backend

ENTRY = Entry("ab" * 32, "png", 1024, 1024, "gpt-image-1", "openai", 42_000, 1.7e9)


def blob(n: int, size: int = 4_000) -> bytes:
    return random.Random(n).randbytes(size)


BLOBS: dict[str, Callable[[Path], tuple[DiskBlobStore | MemoryBlobStore, bool]]] = {
    "memory": lambda _: (MemoryBlobStore(), False),
    "disk": lambda tmp: (DiskBlobStore(tmp / "blobs"), True),
}
ENTRIES: dict[str, Callable[[Path], DiskEntryStore | MemoryEntryStore]] = {
    "memory": lambda _: MemoryEntryStore(),
    "disk": lambda tmp: DiskEntryStore(tmp / "entries"),
}


@pytest.fixture(params=[*sorted(BLOBS), "s3", "s3+memory"])
async def blobs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AsyncBlobStore, bool]]:
    if request.param.startswith("s3"):  # not file-backed: `open` is always None
        s3 = await open_s3_blobs(request.getfixturevalue("s3_settings"))
        # shared mode's blob store: S3 behind a replica's memory tier
        tiered = MemoryTierBlobStore(s3, BytesLRU(1 << 20)) if "memory" in request.param else s3
        yield tiered, False
        await s3.aclose()
        return
    store, file_backed = BLOBS[request.param](tmp_path)
    yield ThreadedBlobStore(store), file_backed
    store.close()


@pytest.fixture(params=[*sorted(ENTRIES), "redis"])
async def entries(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEntryStore]:
    if request.param == "redis":
        backend = open_redis_backend(request)
        client = redis_client(backend.url)
        yield RedisEntryStore(client, backend.prefix)
        await client.aclose()
        return
    store = ENTRIES[request.param](tmp_path)
    yield InlineEntryStore(store)
    store.close()


async def test_blobs_are_content_addressed_and_idempotent(
    blobs: tuple[AsyncBlobStore, bool],
) -> None:
    store, _ = blobs
    datas = [blob(1), blob(2), b"", blob(1)]
    shas = await asyncio.gather(*(store.put(d) for d in datas))
    assert shas == [hashlib.sha256(d).hexdigest() for d in datas]
    assert [await store.get(sha) for sha in shas] == datas
    missing = hashlib.sha256(b"never stored").hexdigest()
    assert (await store.get(missing), await store.open(missing)) == (None, None)
    await store.ping()
    assert (await store.stats()).items == 3


async def test_base64_is_the_blobs_encoding_and_none_when_missing(
    blobs: tuple[AsyncBlobStore, bool],
) -> None:
    store, _ = blobs
    data = blob(3, 30_000)
    sha = await store.put(data)
    assert await store.get_base64(sha) == base64.b64encode(data)
    assert await store.get_base64(sha) == base64.b64encode(data)  # kept or encoded again
    assert await store.get_base64(hashlib.sha256(b"never stored").hexdigest()) is None


async def test_open_gives_a_verified_file_when_file_backed(
    blobs: tuple[AsyncBlobStore, bool],
) -> None:
    store, file_backed = blobs
    sha = await store.put(blob(4))
    opened = await store.open(sha)
    if not file_backed:
        assert opened is None
        return
    assert opened is not None
    assert hashlib.sha256(opened.path.read_bytes()).hexdigest() == sha


async def test_entries_round_trip_replace_and_delete(entries: AsyncEntryStore) -> None:
    other = dataclasses.replace(ENTRY, cost_micros=7)
    await entries.put("k", 0, ENTRY)
    await entries.put("k", 1, other)
    assert (await entries.get("k", 0), await entries.get("k", 1)) == (ENTRY, other)
    assert (await entries.get("k", 2), await entries.get("x", 0)) == (None, None)
    await entries.put("k", 0, other)
    assert await entries.get("k", 0) == other
    await entries.delete("k", 0)
    await entries.delete("k", 0)  # a missing entry is not an error
    assert await entries.get("k", 0) is None
    await entries.ping()
    assert (await entries.stats()).items == 1
