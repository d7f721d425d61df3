"""Group commit of spend rows: settles close together share one fsynced COMMIT, and each
caller still returns only once its own row is committed (proxy.stores.group_commit)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from policies.budget import BudgetSpec
from policies.ledger_models import LedgerRow
from proxy.stores.embedded import SqliteLedgerPort
from proxy.stores.group_commit import GroupCommitter
from proxy.stores.ledger import SqliteLedger

NOW = 1_700_000_000.0
DAY = BudgetSpec("key", "web", 10_000_000, "day")
OWNER = "test-owner"


def _row(cost: int, rid: str, *, ts: float = NOW) -> LedgerRow:
    return LedgerRow(ts, "web", "red", "k" * 64, "gpt-image-1", "openai", 1, cost, 0, "MISS",
                     rid)  # fmt: skip


class Gate:
    """A `before_commit` hook that holds the first COMMIT until the test opens the gate,
    and records the size of every batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.sizes: list[int] = []

    def __call__(self, size: int) -> None:
        self.sizes.append(size)
        self.entered.set()
        assert self.opened.wait(30), "the test never opened the gate"

    async def held(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "no commit started"


@pytest.fixture
def db(tmp_path: Path):
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    yield ledger
    ledger.close()


def _reserve(db: SqliteLedger, n: int) -> list[str]:
    found = [db.reserve([DAY], 50_000, NOW, OWNER) for _ in range(n)]
    assert all(isinstance(rid, str) for rid in found)
    return [str(rid) for rid in found]


async def _until_queued(committer: GroupCommitter, n: int) -> None:
    while committer.queued < n:  # the settle tasks enqueue on their first step
        await asyncio.sleep(0)


def _durable_spend(path: Path) -> tuple[int, int]:
    """Spend and open reservations as another connection sees them: only committed rows."""
    other = SqliteLedger(path)
    try:
        return other.total_spend(), other.open_reservations()
    finally:
        other.close()


async def test_settles_in_one_turn_of_the_loop_share_one_commit(db: SqliteLedger) -> None:
    committer = GroupCommitter(db)
    port = SqliteLedgerPort(db, commits=committer)
    rids = _reserve(db, 12)

    await asyncio.gather(*(port.settle(rid, _row(1_000 * i, rid)) for i, rid in enumerate(rids)))

    assert committer.commits == 1 < len(rids)
    assert _durable_spend(db.path) == (sum(1_000 * i for i in range(12)), 0)
    [usage] = db.budget_left([DAY], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (66_000, 0)


async def test_settles_arriving_during_a_commit_share_the_next_one(db: SqliteLedger) -> None:
    gate = Gate()
    committer = GroupCommitter(db, window=0, before_commit=gate)
    port = SqliteLedgerPort(db, commits=committer)
    first, *rest = _reserve(db, 9)
    leading = asyncio.create_task(port.settle(first, _row(500, first)))
    await gate.held()  # the first batch (one settle) is being committed
    others = [asyncio.create_task(port.settle(rid, _row(700, rid))) for rid in rest]
    await _until_queued(committer, len(rest))
    assert not leading.done()  # its commit has not returned: neither has its caller

    gate.opened.set()
    await asyncio.gather(leading, *others)

    assert gate.sizes == [1, 8]
    assert committer.commits == 2
    assert _durable_spend(db.path) == (500 + 8 * 700, 0)


async def test_a_failing_settle_is_rolled_back_alone(db: SqliteLedger) -> None:
    committer = GroupCommitter(db)
    port = SqliteLedgerPort(db, commits=committer)
    good, bad, also_good = _reserve(db, 3)
    # Its row is inserted and its reservation deleted, then the spend windows of a time
    # without a day raise: the savepoint must undo both.
    broken = _row(900, bad, ts=float("inf"))

    results = await asyncio.gather(
        port.settle(good, _row(100, good)),
        port.settle(bad, broken),
        port.settle(also_good, _row(200, also_good)),
        return_exceptions=True,
    )

    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)
    assert committer.commits == 1
    assert _durable_spend(db.path) == (300, 1)  # the failed one's reservation still holds
    assert sorted(row.cost_micros for row in db.rows()) == [100, 200]
    [usage] = db.budget_left([DAY], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (300, 50_000)


async def test_a_failed_commit_fails_every_caller_of_its_batch(db: SqliteLedger) -> None:
    failures = iter([OSError("disk full")])

    def fail_once(size: int) -> None:
        for error in failures:
            raise error

    committer = GroupCommitter(db, before_commit=fail_once)
    port = SqliteLedgerPort(db, commits=committer)
    rids = _reserve(db, 4)

    results = await asyncio.gather(
        *(port.settle(rid, _row(100, rid)) for rid in rids), return_exceptions=True
    )

    assert [str(r) for r in results] == ["disk full"] * 4
    assert committer.commits == 0
    assert _durable_spend(db.path) == (0, 4)  # rolled back whole: every reservation holds
    await port.settle(rids[0], _row(100, rids[0]))  # the committer goes on
    assert _durable_spend(db.path) == (100, 3)


async def test_a_cancelled_caller_s_row_is_still_written(db: SqliteLedger) -> None:
    gate = Gate()
    committer = GroupCommitter(db, window=0, before_commit=gate)
    port = SqliteLedgerPort(db, commits=committer)
    in_flight, queued = _reserve(db, 2)
    writing = asyncio.create_task(port.settle(in_flight, _row(300, in_flight)))
    await gate.held()
    waiting = asyncio.create_task(port.settle(queued, _row(400, queued)))
    await _until_queued(committer, 1)

    writing.cancel()  # while its batch is being committed
    waiting.cancel()  # while it waits for the next batch
    for task in (writing, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    gate.opened.set()
    await committer.drain()

    assert committer.commits == 2
    assert _durable_spend(db.path) == (700, 0)


async def test_the_same_reservation_twice_in_one_batch_is_one_row(db: SqliteLedger) -> None:
    committer = GroupCommitter(db)
    port = SqliteLedgerPort(db, commits=committer)
    [rid] = _reserve(db, 1)

    await asyncio.gather(port.settle(rid, _row(250, rid)), port.settle(rid, _row(250, rid)))

    assert committer.commits == 1
    assert _durable_spend(db.path) == (250, 0)
    assert len(db.rows()) == 1
