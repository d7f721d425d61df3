"""Rate-limit buckets shared by every worker process: one small SQLite table.

A bucket is state, not a record: the database is opened with `synchronous=OFF` (nothing is
fsynced; after a power loss a bucket merely refills), but each take runs in one
`BEGIN IMMEDIATE` transaction, so two workers never spend the same token.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from policies.ratelimit import Bucket

__all__ = ["SharedBuckets"]

T = TypeVar("T")
_SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL, updated REAL)"


class SharedBuckets:
    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(_SCHEMA)

    def update(
        self,
        keys: Sequence[str],
        decide: Callable[[list[Bucket | None]], tuple[Sequence[Bucket], T]],
    ) -> T:
        """Read the buckets, let `decide` take from them, store what it returns: atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = [self._get(key) for key in keys]
                buckets, decision = decide(current)
                self._db.executemany(
                    "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)",
                    [(key, b.tokens, b.updated) for key, b in zip(keys, buckets, strict=True)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return decision

    def _get(self, key: str) -> Bucket | None:
        row = self._db.execute(
            "SELECT tokens, updated FROM buckets WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else Bucket(float(row[0]), float(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()
