"""One contract suite for the BlobStore and EntryStore ports over every implementation, then
what only the disk stores promise: healing, the verification memo, LRU eviction, reopening,
several processes, and `kill -9`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import diskcache
import pytest

from policies.models import Entry
from proxy.ports import BlobStore, EntryStore
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.memory import MemoryBlobStore, MemoryEntryStore

REPO = Path(__file__).resolve().parents[2]
ENTRY = Entry("ab" * 32, "png", 1024, 1024, "gpt-image-1", "openai", 42_000, 1.7e9)


class ClosableBlobStore(BlobStore, Protocol):
    def close(self) -> None: ...


class ClosableEntryStore(EntryStore, Protocol):
    def close(self) -> None: ...


def blob(seed: int, size: int = 4_000) -> bytes:
    return random.Random(seed).randbytes(size)


# --- fixtures: one per port, parametrized over factories --------------------------------

Advance = Callable[[float], None]  # lets that many seconds pass on a store's clock
BlobCase = tuple[ClosableBlobStore, bool]  # (store, file_backed)
EntryCase = tuple[ClosableEntryStore, Advance]


def _memory_entries(_: Path) -> EntryCase:
    now = [1_700_000_000.0]

    def advance(seconds: float) -> None:
        now[0] += seconds

    return MemoryEntryStore(clock=lambda: now[0]), advance


BLOB_FACTORIES: dict[str, Callable[[Path], BlobCase]] = {
    "memory": lambda _: (MemoryBlobStore(), False),
    "disk": lambda tmp: (DiskBlobStore(tmp / "blobs"), True),
}
# diskcache checks expiry against time.time(), so the disk store's clock is waited for.
ENTRY_FACTORIES: dict[str, Callable[[Path], EntryCase]] = {
    "memory": _memory_entries,
    "disk": lambda tmp: (DiskEntryStore(tmp / "entries"), time.sleep),
}


@pytest.fixture(params=sorted(BLOB_FACTORIES))
def blob_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobCase]:
    case = BLOB_FACTORIES[request.param](tmp_path)
    yield case
    case[0].close()


@pytest.fixture(params=sorted(ENTRY_FACTORIES))
def entry_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EntryCase]:
    case = ENTRY_FACTORIES[request.param](tmp_path)
    yield case
    case[0].close()


# --- BlobStore contract -----------------------------------------------------------------


def test_put_returns_sha256_is_idempotent_and_get_round_trips(blob_case: BlobCase) -> None:
    store, _ = blob_case
    datas = [blob(1), blob(2), b"", blob(1)]
    shas = [store.put(data) for data in datas]
    assert shas == [hashlib.sha256(data).hexdigest() for data in datas]
    assert [store.get(sha) for sha in shas] == datas


def test_missing_blob_is_none_and_ping_works(blob_case: BlobCase) -> None:
    store, _ = blob_case
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert (store.get(sha), store.open(sha)) == (None, None)
    store.ping()


def test_open_gives_a_verified_file_when_file_backed(blob_case: BlobCase) -> None:
    store, file_backed = blob_case
    sha = store.put(blob(4))
    opened = store.open(sha)
    if not file_backed:
        assert opened is None
        return
    assert opened is not None
    assert opened.size == len(blob(4))
    assert hashlib.sha256(opened.path.read_bytes()).hexdigest() == sha


# --- EntryStore contract ----------------------------------------------------------------


def test_entries_round_trip_per_key_and_index(entry_case: EntryCase) -> None:
    store, _ = entry_case
    revised = dataclasses.replace(ENTRY, blob="cd" * 32, revised_prompt="a fox, «watercolour»")
    store.put("k", 0, ENTRY)
    store.put("k", 1, revised)
    assert (store.get("k", 0), store.get("k", 1)) == (ENTRY, revised)
    assert (store.get("k", 2), store.get("other", 0)) == (None, None)
    store.ping()


def test_entry_put_replaces_and_delete_removes(entry_case: EntryCase) -> None:
    store, _ = entry_case
    other = dataclasses.replace(ENTRY, cost_micros=7)
    store.put("k", 0, ENTRY)
    store.put("k", 0, other)
    assert store.get("k", 0) == other
    store.delete("k", 0)
    assert store.get("k", 0) is None
    store.delete("k", 0)  # deleting a missing entry is not an error


def test_entry_ttl_expires(entry_case: EntryCase) -> None:
    store, advance = entry_case
    # Long enough that a loaded machine still reads it back before it expires (at 0.1 s the
    # disk case failed once under load); the disk store's clock is real time, waited for.
    store.put("k", 0, ENTRY, ttl=0.5)
    store.put("k", 1, ENTRY, ttl=60)
    store.put("k", 2, ENTRY)
    assert store.get("k", 0) == ENTRY
    advance(0.6)
    assert [store.get("k", index) for index in range(3)] == [None, ENTRY, ENTRY]


# --- DiskBlobStore: integrity, memo, eviction -------------------------------------------


@pytest.fixture
def disk_blobs(tmp_path: Path) -> Iterator[DiskBlobStore]:
    store = DiskBlobStore(tmp_path / "blobs")
    yield store
    store.close()


def blob_path(directory: Path, sha: str) -> Path:
    """`sha`'s file, found by another instance (so nothing is memoized in the one tested)."""
    other = DiskBlobStore(directory)
    opened = other.open(sha)
    other.close()
    assert opened is not None
    return opened.path


def flip(path: Path, data: bytes) -> None:
    """Rewrite in place (same inode, same size); if a coarse filesystem clock left the mtime
    on the same tick, move it as a fine-grained one would."""
    before = path.stat()
    with path.open("r+b") as file:
        file.write(bytes(b ^ 0xFF for b in data))
    after = path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))


def truncate(path: Path, data: bytes) -> None:
    path.write_bytes(data[: len(data) // 2])


def unlink(path: Path, data: bytes) -> None:
    path.unlink()


@pytest.mark.parametrize("read_first", [False, True], ids=["unverified", "memoized"])
@pytest.mark.parametrize("damage", [flip, truncate, unlink])
@pytest.mark.parametrize("reader", [DiskBlobStore.get, DiskBlobStore.open])
def test_damaged_blob_is_dropped_then_healed_by_put(
    disk_blobs: DiskBlobStore,
    reader: Callable[[DiskBlobStore, str], object],
    damage: Callable[[Path, bytes], None],
    read_first: bool,
) -> None:
    data = blob(7)
    sha = disk_blobs.put(data)
    if read_first:
        assert disk_blobs.get(sha) == data
    path = blob_path(disk_blobs.directory, sha)
    damage(path, data)
    assert reader(disk_blobs, sha) is None
    assert disk_blobs.healed == 1
    assert not path.exists()
    assert (disk_blobs.get(sha), disk_blobs.open(sha), disk_blobs.healed) == (None, None, 1)
    assert disk_blobs.put(data) == sha
    assert disk_blobs.get(sha) == data


def test_put_over_a_damaged_blob_rewrites_it(disk_blobs: DiskBlobStore) -> None:
    sha = disk_blobs.put(blob(8))
    truncate(blob_path(disk_blobs.directory, sha), blob(8))
    assert disk_blobs.put(blob(8)) == sha
    assert (disk_blobs.healed, disk_blobs.get(sha)) == (1, blob(8))


def test_unchanged_file_is_hashed_once_and_never_rewritten(disk_blobs: DiskBlobStore) -> None:
    sha = disk_blobs.put(blob(9))
    assert disk_blobs.verifications == 0
    assert disk_blobs.get(sha) == disk_blobs.get(sha) == blob(9)
    assert disk_blobs.open(sha) is not None
    before = blob_path(disk_blobs.directory, sha).stat()
    disk_blobs.put(blob(9))  # finds the verified file and leaves it alone
    after = blob_path(disk_blobs.directory, sha).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert disk_blobs.verifications == 1
    other = DiskBlobStore(disk_blobs.directory)  # another process's memo starts empty
    assert (other.get(sha), other.verifications) == (blob(9), 1)
    other.close()


def test_lru_evicts_the_least_recently_used_blobs_never_the_new_one(tmp_path: Path) -> None:
    store = DiskBlobStore(tmp_path / "blobs", max_bytes=700_000)  # 3 blobs + sqlite fit
    a, b, c, d = (store.put(blob(seed, 200_000)) for seed in range(20, 24))
    assert store.evictions == 1
    assert store.get(a) is None  # nothing was read yet: a was put longest ago
    assert store.get(b) is not None
    assert store.get(c) is not None
    e = store.put(blob(24, 200_000))  # b and c were read after d was put
    assert store.evictions == 2
    assert [store.get(sha) is not None for sha in (b, c, d, e)] == [True, True, False, True]
    big = store.put(blob(25, 800_000))  # alone over the bound: evicts all else, stays
    assert store.evictions == 5
    assert [store.get(sha) for sha in (b, c, e)] == [None, None, None]
    assert store.get(big) == blob(25, 800_000)
    store.close()


# --- reopening, unreadable entries, several processes, kill -9 --------------------------


def test_blobs_and_entries_survive_reopening(tmp_path: Path) -> None:
    blobs, entries = DiskBlobStore(tmp_path / "blobs"), DiskEntryStore(tmp_path / "entries")
    sha = blobs.put(blob(13))
    entries.put("k", 3, ENTRY, ttl=3600)
    blobs.close()
    entries.close()
    blobs, entries = DiskBlobStore(tmp_path / "blobs"), DiskEntryStore(tmp_path / "entries")
    assert (blobs.get(sha), entries.get("k", 3)) == (blob(13), ENTRY)
    blobs.close()
    entries.close()


def test_unreadable_entry_is_a_miss(tmp_path: Path) -> None:
    store = DiskEntryStore(tmp_path / "entries")
    with diskcache.Cache(str(tmp_path / "entries")) as raw:
        raw.set("k/0", "not json")
        raw.set("k/1", json.dumps({"blob": "ab" * 32}))
        raw.set("k/2", 12)
    assert [store.get("k", index) for index in range(3)] == [None, None, None]
    store.close()


CHILD = """
import json, random, sys, time
from pathlib import Path
from policies.models import Entry
from proxy.stores.disk import DiskBlobStore, DiskEntryStore

blobs, entries = DiskBlobStore(Path(sys.argv[1])), DiskEntryStore(Path(sys.argv[2]))
sha = blobs.put(random.Random(int(sys.argv[3])).randbytes(50_000))
entries.put("child-key", 0, Entry.from_json({**json.loads(sys.argv[4]), "blob": sha}))
print("ok", sha, flush=True)
time.sleep(float(sys.argv[5]))
"""


def spawn_child(tmp_path: Path, seed: int, linger: float) -> subprocess.Popen[str]:
    """Python in another process puts blob(seed, 50_000) and an entry for it, says "ok"."""
    args = [str(tmp_path / "blobs"), str(tmp_path / "entries"), str(seed)]
    args += [json.dumps(ENTRY.to_json()), str(linger)]
    return subprocess.Popen(  # our own interpreter running our own code
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )


def read_back(tmp_path: Path, blobs: DiskBlobStore, entries: DiskEntryStore, seed: int) -> None:
    data = random.Random(seed).randbytes(50_000)
    sha = hashlib.sha256(data).hexdigest()
    assert entries.get("child-key", 0) == dataclasses.replace(ENTRY, blob=sha)
    assert blobs.get(sha) == data
    opened = blobs.open(sha)
    assert opened is not None
    assert opened.path.is_relative_to(tmp_path / "blobs")
    blobs.close()
    entries.close()


def test_another_process_writes_and_this_one_reads(tmp_path: Path) -> None:
    blobs, entries = DiskBlobStore(tmp_path / "blobs"), DiskEntryStore(tmp_path / "entries")
    child = spawn_child(tmp_path, seed=50, linger=0)
    out, _ = child.communicate(timeout=60)
    assert (child.returncode, out[:3]) == (0, "ok ")
    read_back(tmp_path, blobs, entries, seed=50)


def test_data_put_survives_kill_9(tmp_path: Path) -> None:
    child = spawn_child(tmp_path, seed=51, linger=60)
    assert child.stdout is not None
    line = child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()
    assert line.startswith("ok "), line
    assert child.returncode == -signal.SIGKILL
    blobs, entries = DiskBlobStore(tmp_path / "blobs"), DiskEntryStore(tmp_path / "entries")
    read_back(tmp_path, blobs, entries, seed=51)
