"""One SQLite database used from threads and processes: WAL, FULL sync, explicit transactions."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

__all__ = ["SqliteDatabase", "enable_wal"]


def enable_wal(db: sqlite3.Connection, timeout: float, pause: float = 0.01) -> None:
    """`PRAGMA journal_mode=WAL`, retried for up to `timeout` seconds while the database is
    busy. SQLite may refuse a journal-mode change at once with "database is locked", without
    its busy handler, while another process opens the same file (several workers starting
    together after a kill -9, one of them recovering the WAL): the start must wait, not fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(pause)


class SqliteDatabase:
    """A connection per process behind a lock (the service calls it from worker threads).

    WAL lets readers run beside the one writer; `synchronous=FULL` fsyncs the WAL at every
    commit, so a committed row survives power loss, not only a killed process."""

    def __init__(
        self, path: Path, schema: str, *, busy_timeout: float = 30.0, rows: bool = False
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        if rows:
            self._db.row_factory = sqlite3.Row
        enable_wal(self._db, busy_timeout)
        self._db.execute("PRAGMA synchronous=FULL")
        with self._write() as db:
            for statement in schema.split(";"):
                db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction for code outside this class (`proxy.stores.group_commit`):
        BEGIN IMMEDIATE on entry, COMMIT on a clean exit, ROLLBACK if anything raises."""
        return self._write()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the database's single write lock up
        front (waiting up to busy_timeout), so whatever it reads stays true until COMMIT."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")
