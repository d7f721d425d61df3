"""Hit rows, written in batches from the event loop: cheap, and never waiting for a lock.

A hit's ledger row moves no money (its cost is 0; `saved` is what the cache spared), so it
does not need what a spend row needs. Its own connection commits with `synchronous=NORMAL`
(in WAL mode: durable when the process is killed, not always after a power loss) and does
not wait for SQLite's write lock: when another writer holds it, `begin` says so at once and
the caller (`SqliteLedgerPort.record`) writes the batch from a thread instead; when it is free,
the caller inserts in slices, serving requests in between, then commits. Measured in
bench/: the same batch written by a thread (a GIL hand-off per row) put 50-90 ms pauses
into the hit path's p99.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from proxy.stores.ledger import FREE_ROW_INSERT

__all__ = ["HitRowWriter"]


class HitRowWriter:
    def __init__(self, path: Path) -> None:
        """`path`: a ledger database that `SqliteLedger` has already made (WAL, schema)."""
        self._db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # SqliteLedger.checkpoint does it

    def begin(self) -> bool:
        """Take the write lock if it is free (False at once if not). The caller may insert
        in several slices, letting the event loop run between them, then commit."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # "database is locked": another writer has it
            return False
        return True

    def insert(self, values: Sequence[tuple[object, ...]]) -> None:
        """Rows as `row_values` tuples (their cost already known to be 0)."""
        self._db.executemany(FREE_ROW_INSERT, values)

    def commit(self) -> None:
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()
