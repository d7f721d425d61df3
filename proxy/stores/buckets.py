"""Rate-limit buckets shared by every worker process: one small SQLite table.

A bucket is state, not a record: the database is opened with `synchronous=OFF` (nothing is
fsynced; after a power loss a bucket merely refills), but each take runs in one
`BEGIN IMMEDIATE` transaction, so two workers never spend the same token.

`try_update` never waits (a second connection with no busy timeout), so the event loop may
call it; when another writer holds the lock it says so and the caller waits in a thread
with `update`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from policies.ratelimit import Bucket
from proxy.stores.sqlite_db import enable_wal

__all__ = ["BUSY", "SharedBuckets"]

T = TypeVar("T")
_SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL, updated REAL)"
BUSY = object()  # `try_update`: another writer holds the lock; nothing was done


class SharedBuckets:
    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = _connect(path, busy_timeout)
        enable_wal(self._db, busy_timeout)
        self._db.execute(_SCHEMA)
        self._fast_lock = threading.Lock()
        self._fast = _connect(path, 0.0)

    def update(
        self,
        keys: Sequence[str],
        decide: Callable[[list[Bucket | None]], tuple[Sequence[Bucket], T]],
    ) -> T:
        """Read the buckets, let `decide` take from them, store what it returns: atomically.
        Waits (up to `busy_timeout`) for another writer."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            return _take(self._db, keys, decide)

    def try_update(
        self,
        keys: Sequence[str],
        decide: Callable[[list[Bucket | None]], tuple[Sequence[Bucket], T]],
    ) -> T | object:
        """`update` if the write lock is free at once, else `BUSY` (nothing done)."""
        if not self._fast_lock.acquire(blocking=False):
            return BUSY
        try:
            try:
                self._fast.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # "database is locked": another writer has it
                return BUSY
            return _take(self._fast, keys, decide)
        finally:
            self._fast_lock.release()

    def close(self) -> None:
        with self._lock, self._fast_lock:
            self._db.close()
            self._fast.close()


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=OFF")
    return db


def _take(
    db: sqlite3.Connection,
    keys: Sequence[str],
    decide: Callable[[list[Bucket | None]], tuple[Sequence[Bucket], T]],
) -> T:
    """Inside a write transaction just begun: read, decide, store, commit."""
    try:
        current = [_get(db, key) for key in keys]
        buckets, decision = decide(current)
        db.executemany(
            "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)",
            [(key, b.tokens, b.updated) for key, b in zip(keys, buckets, strict=True)],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return decision


def _get(db: sqlite3.Connection, key: str) -> Bucket | None:
    row = db.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
    return None if row is None else Bucket(float(row[0]), float(row[1]))
