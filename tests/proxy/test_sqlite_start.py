"""Opening a SQLite store while another process holds the file: the start waits, not fails."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.stores.sqlite_db import enable_wal


class BusyFor:
    """A connection whose first `times` journal-mode changes are refused as SQLite refuses
    them while another process opens the file ("database is locked", no busy handler)."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left = times
        self.message = message
        self.calls = 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)


def test_a_locked_database_is_retried_until_wal_is_on():
    db = BusyFor(3)
    enable_wal(db, timeout=5, pause=0)  # type: ignore[arg-type]
    assert db.calls == 4


def test_a_database_locked_past_the_timeout_raises():
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(BusyFor(10**9), timeout=0.05, pause=0.001)  # type: ignore[arg-type]


def test_another_error_is_not_retried():
    db = BusyFor(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        enable_wal(db, timeout=5, pause=0)  # type: ignore[arg-type]
    assert db.calls == 1


def test_a_real_file_ends_in_wal(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    enable_wal(db, timeout=1)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
