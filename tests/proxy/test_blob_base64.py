"""The disk blob store keeps the base64 of the blobs it served as `b64_json`: kept on the
first such read, read back (checked) on later ones, never served when damaged, dropped with
its blob, and a use of the blob under an LRU bound."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.stores.async_stores import ThreadedBlobStore
from proxy.stores.disk import DiskBlobStore
from proxy.stores.memory import MemoryBlobStore


def blob(seed: int, size: int = 4_000) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DiskBlobStore]:
    disk = DiskBlobStore(tmp_path / "blobs")
    yield disk
    disk.close()


def text_files(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs-base64").rglob("*.val")]


async def test_the_first_read_keeps_the_text_and_later_reads_use_it(
    store: DiskBlobStore, tmp_path: Path
) -> None:
    data = blob(1)
    sha = store.put(data)
    assert store.stored_base64(sha) is None  # nothing kept before a b64 answer needs it
    assert await ThreadedBlobStore(store).get_base64(sha) == base64.b64encode(data)
    [kept] = text_files(tmp_path)
    assert kept.read_bytes() == base64.b64encode(data)
    other = DiskBlobStore(tmp_path / "blobs")  # another worker reads what this one kept
    assert other.stored_base64(sha) == base64.b64encode(data)
    other.close()


async def test_a_missing_blob_has_no_text(store: DiskBlobStore) -> None:
    assert await ThreadedBlobStore(store).get_base64("ab" * 32) is None
    store.keep_base64("cd" * 32, b"AAAA")  # no blob: nothing is kept
    assert store.stored_base64("cd" * 32) is None


def flip(path: Path) -> None:
    before = path.stat()
    text = path.read_bytes()
    path.write_bytes(text[:10] + (b"B" if text[10:11] != b"B" else b"C") + text[11:])
    after = path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))


def not_base64(path: Path) -> None:
    path.write_bytes(b"%%%" + path.read_bytes()[3:])


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize("read_first", [False, True], ids=["unverified", "memoized"])
@pytest.mark.parametrize("damage", [flip, not_base64, truncate, Path.unlink])
async def test_damaged_text_is_never_served_and_is_kept_again(
    store: DiskBlobStore, tmp_path: Path, damage: Callable[[Path], None], read_first: bool
) -> None:
    data = blob(2)
    sha = store.put(data)
    threaded = ThreadedBlobStore(store)
    await threaded.get_base64(sha)
    if read_first:
        assert store.stored_base64(sha) == base64.b64encode(data)
    [kept] = text_files(tmp_path)
    damage(kept)
    assert store.stored_base64(sha) is None
    assert await threaded.get_base64(sha) == base64.b64encode(data)  # encoded, kept again
    assert store.stored_base64(sha) == base64.b64encode(data)


async def test_the_text_goes_with_a_healed_blob(store: DiskBlobStore) -> None:
    data = blob(3)
    sha = store.put(data)
    await ThreadedBlobStore(store).get_base64(sha)
    opened = store.open(sha)
    assert opened is not None
    opened.path.write_bytes(data[:100])  # the image is damaged: healed on its next read
    assert store.get(sha) is None
    assert store.healed == 1
    assert store.stored_base64(sha) is None
    assert await ThreadedBlobStore(store).get_base64(sha) is None  # a miss, as for `get`


async def test_under_a_bound_the_text_is_a_use_and_goes_with_an_evicted_blob(
    tmp_path: Path,
) -> None:
    # 3 blobs + sqlite fit; the text of 3 too
    store = DiskBlobStore(tmp_path / "blobs", max_bytes=700_000, base64_bytes=900_000)
    threaded = ThreadedBlobStore(store)
    a, b, c = (store.put(blob(seed, 200_000)) for seed in range(10, 13))
    assert await threaded.get_base64(a) is not None  # a: read (as text) after b and c
    d = store.put(blob(13, 200_000))  # evicts b, the least recently used
    assert store.evictions == 1
    assert [store.open(sha) is not None for sha in (a, b, c, d)] == [True, False, True, True]
    assert await threaded.get_base64(c) is not None  # (reading a's text would be a use)
    store.put(blob(14, 200_000))  # a was used before d and c: a goes, and its text
    assert store.evictions == 2
    assert store.open(a) is None
    assert store.stored_base64(a) is None
    assert store.stored_base64(c) is not None
    store.close()


class FullDisk(MemoryBlobStore):
    """A store whose disk is full: every text it is asked to keep fails."""

    def keep_base64(self, sha256: str, text: bytes) -> None:
        raise OSError(28, "No space left on device")


async def test_a_text_that_cannot_be_kept_still_answers() -> None:
    """Keeping the text only saves CPU: when it cannot be written, the answer stands."""
    store = FullDisk()
    data = blob(5)
    sha = store.put(data)
    assert await ThreadedBlobStore(store).get_base64(sha) == base64.b64encode(data)
