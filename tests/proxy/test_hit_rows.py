"""Hit rows from the event loop: written when the lock is free, handed on when it is not."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import SqliteLedger, row_values
from tests.proxy.test_ledger import row


@pytest.fixture
def ledger(tmp_path):
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    yield store
    store.close()


def write(writer: HitRowWriter, rows) -> bool:
    """What SqliteLedgerPort.record does on the loop: take the lock if free, insert, commit."""
    if not writer.begin():
        return False
    writer.insert([row_values(r) for r in rows])
    writer.commit()
    return True


def count(ledger) -> int:
    with sqlite3.connect(ledger.path) as db:
        return db.execute("SELECT COUNT(*) FROM ledger WHERE cache = 'HIT'").fetchone()[0]


def test_hit_rows_are_written_and_read_by_the_ledger(ledger):
    writer = HitRowWriter(ledger.path)
    rows = [row(cost=0, saved=40_000, cache="HIT", request_id=f"req_{i}") for i in range(500)]
    assert write(writer, rows)
    assert count(ledger) == 500
    ledger.checkpoint()
    writer.close()


def test_a_held_write_lock_is_reported_not_waited_for(ledger):
    writer = HitRowWriter(ledger.path)
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process settling a spend row
    try:
        assert write(writer, [row(cost=0, saved=1, cache="HIT")]) is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count(ledger) == 0
    assert write(writer, [row(cost=0, saved=1, cache="HIT")])
    assert count(ledger) == 1
    writer.close()


def test_spend_and_hits_interleave_from_threads_and_the_loop(ledger):
    """Spend rows settle from threads while hit batches go in: every row lands once."""
    writer = HitRowWriter(ledger.path)
    done = threading.Event()

    def spend() -> None:
        for i in range(100):
            ledger.record(row(cost=1_000, request_id=f"spend_{i}"))
        done.set()

    thread = threading.Thread(target=spend)
    thread.start()
    pending = [row(cost=0, saved=5, cache="HIT", request_id=f"hit_{i}") for i in range(300)]
    written = handed_on = 0
    for start in range(0, 300, 30):
        batch = pending[start : start + 30]
        if write(writer, batch):
            written += len(batch)
        else:
            ledger.record_free([row_values(r) for r in batch])  # flush_hits, from a thread
            handed_on += len(batch)
    thread.join()
    assert done.is_set() and written + handed_on == 300
    with sqlite3.connect(ledger.path) as db:
        hits, spent = db.execute(
            "SELECT SUM(cache = 'HIT'), SUM(cost_micros) FROM ledger"
        ).fetchone()
    assert hits == 300 and spent == 100_000
    writer.close()
