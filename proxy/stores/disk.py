"""The embedded default stores: blobs and entries in diskcache directories.

Both stores keep nothing that matters only in memory: every `put` is committed to sqlite
(and, for blobs, to a file written before the commit) before it returns, so the data
survives `kill -9` and is shared by every process that opens the same directory.

Durability choice: sqlite in WAL mode with `synchronous=NORMAL` (diskcache's defaults,
spelled out below). A committed transaction survives the process dying at any point; only
an OS crash or power loss can drop the last few commits, which for a cache is a miss, and
blob files are not fsynced either: a blob file torn by power loss fails verification on
its next read and is dropped (healed), never served.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import Final

import diskcache

from policies.models import Entry
from proxy.ports import BlobFile, StoreStats
from proxy.stores.disk_base64 import Base64Copies
from proxy.stores.entry_json import dump_entry, load_entry
from proxy.stores.verified_files import Signature, VerifiedFiles, signature

__all__ = ["DiskBlobStore", "DiskEntryStore"]

_UNBOUNDED: Final = 2**62  # diskcache's default size_limit is 1 GiB; "no bound" is huge.
_PING_KEY: Final = "__ping__"
_SQLITE: Final[dict[str, object]] = {"sqlite_journal_mode": "wal", "sqlite_synchronous": 1}

# diskcache has no public query for these; the schema is stable across diskcache 5.x
# (pinned <6 in pyproject). Keys of this store are always `str`, stored with raw = 1.
_SELECT_FILENAME: Final = "SELECT filename FROM Cache WHERE key = ? AND raw = 1"
_SELECT_LRU: Final = "SELECT key FROM Cache WHERE key != ? ORDER BY access_time LIMIT 1"
_TOUCH: Final = "UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1"


class DiskBlobStore:
    """sha256 -> image bytes, each blob one file of a diskcache `Cache` in `directory`.

    `max_bytes` bounds diskcache's `volume()` (blob files plus its sqlite index): past it,
    a `put` evicts the least recently used (read or put) other blobs. The counters
    `evictions`, `healed` and `verifications` count what *this process* did.

    The base64 text of blobs served as `b64_json` is kept beside them, in `<directory>-base64`
    (`proxy.stores.disk_base64`): bounded by `base64_bytes`, by default a quarter of
    `max_bytes` when that is set, and dropped with its blob.

    Reads never return bytes that don't hash to their address (`proxy.stores.verified_files`:
    a file is hashed the first time this process reads it, and when it changes).
    """

    def __init__(
        self, directory: Path, *, max_bytes: int | None = None, base64_bytes: int | None = None
    ) -> None:
        self._max_bytes = max_bytes
        # cull_limit=0: diskcache's own culling on `set` drops up to 10 LRU rows at once
        # (possibly the one just stored); `_evict` drops exactly what is needed instead.
        self._cache = diskcache.Cache(
            str(directory),
            # LRU makes every read a write (an access time); without a bound, reads stay reads.
            eviction_policy="none" if max_bytes is None else "least-recently-used",
            size_limit=_UNBOUNDED if max_bytes is None else max_bytes,
            cull_limit=0,
            disk_min_file_size=0,  # every blob is a file, so `open` can hand out its path
            **_SQLITE,
        )
        self._lock = threading.Lock()  # the counters
        self._verified = VerifiedFiles()
        self._base64 = Base64Copies(
            directory.with_name(f"{directory.name}-base64"),
            max_bytes=base64_bytes or (None if max_bytes is None else max_bytes // 4),
        )
        self.evictions = 0
        self.healed = 0
        self.verifications = 0

    @property
    def directory(self) -> Path:
        return Path(self._cache.directory)

    def put(self, data: bytes) -> str:
        """Store `data` unless a verified copy is there already; return its sha256 hex."""
        sha = hashlib.sha256(data).hexdigest()
        if self.open(sha) is not None:
            return sha
        # `add` writes the file, then inserts the row in one transaction unless another
        # process added the same blob meanwhile (then its own file is removed again).
        if self._cache.add(sha, bytes(data)):
            self._evict(keep=sha)
        return sha

    def get(self, sha256: str) -> bytes | None:
        handle = self._handle(sha256)
        if handle is None:
            return None
        with handle:
            before = signature(handle)
            data = handle.read()
            after = signature(handle)
        if self._verified.trusted(sha256, before, after):
            return data
        if not self._check(sha256, hashlib.sha256(data).hexdigest(), before, after):
            return None
        return data

    def open(self, sha256: str) -> BlobFile | None:
        handle = self._handle(sha256)
        if handle is None:
            return None
        with handle:
            before = signature(handle)
            if not self._verified.trusted(sha256, before, before):
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
                if not self._check(sha256, digest, before, signature(handle)):
                    return None
        return BlobFile(path=Path(before.path), size=before.size)

    def stored_base64(self, sha256: str) -> bytes | None:
        """The base64 of `sha256` if kept (`keep_base64`), checked; else None. A blob that is
        gone has no text kept: it is dropped with the blob. Under a bound, reading the text
        counts as a use of the blob, as `get` would (or a blob served only as base64 would be
        evicted as unused)."""
        text = self._base64.get(sha256)
        if text is not None and self._max_bytes is not None and not self._touch(sha256):
            self._base64.discard(sha256)
            return None
        return text

    def keep_base64(self, sha256: str, text: bytes) -> None:
        """Keep the base64 `text` of the verified blob `sha256`, unless the blob is gone."""
        self._base64.keep(sha256, text)
        if sha256 not in self._cache:  # evicted or healed meanwhile: no text without its blob
            self._base64.discard(sha256)

    def stats(self) -> StoreStats:
        """What this store holds now, and what this process evicted and healed."""
        return StoreStats(
            items=len(self._cache),
            bytes=self._cache.volume(),
            evictions=self.evictions,
            healed=self.healed,
        )

    def ping(self) -> None:
        _ = _PING_KEY in self._cache  # a real sqlite read; raises if the index is unusable

    def close(self) -> None:
        self._cache.close()
        self._base64.close()

    def _handle(self, sha: str) -> io.BufferedReader | None:
        """An open handle on `sha`'s file (marking it used), or None if there is none."""
        value = self._cache.get(sha, read=True)
        if isinstance(value, io.BufferedReader):
            return value
        # A row whose file is gone (or an in-database value this store never writes).
        if value is not None or sha in self._cache:
            self._drop(sha, bad_path=None)
        return None

    def _touch(self, sha: str) -> bool:
        """Mark `sha` used now; False if it has no row."""
        with self._cache.transact():
            return bool(self._cache._sql(_TOUCH, (time.time(), sha)).rowcount)

    def _check(self, sha: str, digest: str, before: Signature, after: Signature) -> bool:
        """Record one verification; remember a good file, drop a bad one."""
        with self._lock:
            self.verifications += 1
        if digest != sha:
            self._drop(sha, bad_path=before.path)
            return False
        self._verified.remember(sha, before, after)
        return True

    def _drop(self, sha: str, bad_path: str | None) -> None:
        """Delete `sha` if its row still holds the bad file (`bad_path`), or, with None,
        a missing file or an in-database value. A concurrent good re-put is left alone."""
        with self._cache.transact():
            row = self._cache._sql(_SELECT_FILENAME, (sha,)).fetchone()
            if row is None:
                return
            path = None if row[0] is None else os.path.join(self._cache.directory, row[0])
            if bad_path is not None:
                still_bad = path == bad_path
            else:
                still_bad = path is None or not os.path.exists(path)
            if not still_bad:
                return
            self._cache.delete(sha)
        self._base64.discard(sha)
        self._verified.forget(sha)
        with self._lock:
            self.healed += 1

    def _evict(self, keep: str) -> None:
        """Drop least recently used blobs other than `keep` until within `max_bytes`."""
        if self._max_bytes is None:
            return
        evicted: list[str] = []
        with self._cache.transact():
            while self._cache.volume() > self._max_bytes:
                row = self._cache._sql(_SELECT_LRU, (keep,)).fetchone()
                if row is None:  # `keep` alone is over the bound: keep it anyway
                    break
                if self._cache.delete(row[0]):
                    evicted.append(row[0])
        for sha in evicted:
            self._base64.discard(sha)
            self._verified.forget(sha)
        with self._lock:
            self.evictions += len(evicted)


def _entry_key(key: str, index: int) -> str:
    return f"{key}/{index}"


class DiskEntryStore:
    """(request key, index) -> Entry as JSON text in a diskcache `Cache` in `directory`.

    Unbounded in size (entries are tiny); a `ttl` becomes diskcache's `expire`, and
    diskcache removes expired rows as later `put`s happen. An entry whose blob was evicted
    is still returned: the service treats that as a miss.
    """

    def __init__(self, directory: Path) -> None:
        self._cache = diskcache.Cache(
            str(directory),
            eviction_policy="none",
            size_limit=_UNBOUNDED,
            **_SQLITE,
        )

    @property
    def directory(self) -> Path:
        return Path(self._cache.directory)

    def get(self, key: str, index: int) -> Entry | None:
        raw = self._cache.get(_entry_key(key, index))
        return load_entry(raw) if isinstance(raw, str) else None  # unreadable: a miss

    def put(self, key: str, index: int, entry: Entry, *, ttl: float | None = None) -> None:
        self._cache.set(_entry_key(key, index), dump_entry(entry), expire=ttl)

    def delete(self, key: str, index: int) -> None:
        self._cache.delete(_entry_key(key, index))

    def stats(self) -> StoreStats:
        return StoreStats(items=len(self._cache), bytes=self._cache.volume())

    def ping(self) -> None:
        _ = _PING_KEY in self._cache  # a real sqlite read; raises if the index is unusable

    def close(self) -> None:
        self._cache.close()
