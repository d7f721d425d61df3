"""The PostgreSQL ledger under the races shared mode brings: replicas (each its own pool)
reserving from one budget at once, sweeping one dead replica's reservations at once, and
the hit rows of a busy flush in one call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from policies.budget import BudgetSpec, Denied
from policies.ledger_models import LedgerRow
from proxy.stores.owners import OwnerState
from proxy.stores.pg_database import PgDatabase
from proxy.stores.pg_ledger import PgLedger
from proxy.stores.pg_reports import PgLedgerReports
from tests.backends.postgres import postgres_database

NOW = 1_700_000_000.0
QUOTE = 1_000
FITS = 37  # the global budget holds exactly this many quotes
GLOBAL = BudgetSpec("global", "", FITS * QUOTE, "day")
TEAM = BudgetSpec("team", "red", 10 * FITS * QUOTE, "month")
KEYS = [BudgetSpec("key", f"key-{i}", 20 * QUOTE, "total") for i in range(4)]


def _row(cost: int, key: str = "key-0", cache: str = "MISS", rid: str = "r") -> LedgerRow:
    return LedgerRow(NOW, key, "red", "k" * 64, "gpt-image-1", "openai", 1, cost, 0, cache, rid)


@pytest.fixture
async def replicas() -> AsyncIterator[list[PgDatabase]]:
    """Four pools on one fresh database, as four replicas would hold them."""
    async with postgres_database() as dsn:
        pools = [await PgDatabase.connect(dsn, min_size=1, max_size=5) for _ in range(4)]
        yield pools
        for db in pools:
            await db.close()


async def _watch(ledger: PgLedger, stop: asyncio.Event, seen: list[int]) -> None:
    """Read the global budget while the replicas reserve: what it ever showed as used."""
    while not stop.is_set():
        (usage,) = await ledger.budget_left([GLOBAL], NOW)
        seen.append(usage.used_micros)
        await asyncio.sleep(0)


async def test_replicas_reserving_at_once_get_exactly_what_fits(
    replicas: list[PgDatabase],
) -> None:
    ledgers = [PgLedger(db) for db in replicas]

    def budgets(i: int) -> list[BudgetSpec]:  # both orders: locks must not deadlock
        key = KEYS[(i // 2) % 4]  # each key in both orders
        return [key, TEAM, GLOBAL] if i % 2 else [GLOBAL, key]

    stop, seen = asyncio.Event(), list[int]()
    watcher = asyncio.create_task(_watch(ledgers[0], stop, seen))
    results = await asyncio.gather(
        *(ledgers[i % 4].reserve(budgets(i), QUOTE, NOW, f"replica-{i % 4}") for i in range(200))
    )
    stop.set()
    await watcher
    granted = [r for r in results if isinstance(r, str)]
    assert len(granted) == FITS
    assert len(set(granted)) == FITS
    assert all(isinstance(r, Denied) for r in results if not isinstance(r, str))
    assert seen and max(seen) <= GLOBAL.limit_micros
    (usage,) = await ledgers[1].budget_left([GLOBAL], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (0, FITS * QUOTE)

    await asyncio.gather(
        *(ledgers[i % 4].settle(r, _row(QUOTE, rid=r)) for i, r in enumerate(granted))
    )
    (usage,) = await ledgers[2].budget_left([GLOBAL], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (FITS * QUOTE, 0)
    assert isinstance(await ledgers[3].reserve([GLOBAL], 1, NOW, "replica-3"), Denied)


async def test_settling_while_others_reserve_neither_deadlocks_nor_overspends(
    replicas: list[PgDatabase],
) -> None:
    ledgers = [PgLedger(db) for db in replicas]

    def budgets(i: int) -> list[BudgetSpec]:
        key = KEYS[(i // 2) % 4]
        return [key, TEAM, GLOBAL] if i % 2 else [GLOBAL, key]

    async def reserve(i: int) -> tuple[int, str | Denied]:
        return i, await ledgers[i % 4].reserve(budgets(i), QUOTE, NOW, f"replica-{i % 4}")

    first = [
        (i, r) for i, r in await asyncio.gather(*map(reserve, range(80))) if isinstance(r, str)
    ]
    assert len(first) == FITS

    async def settle(i: int, rid: str) -> None:  # spends on every window of its key and team
        key = budgets(i)[0 if i % 2 else 1].name
        await ledgers[(i + 1) % 4].settle(rid, _row(QUOTE // 2, key=key, rid=rid))

    stop, seen = asyncio.Event(), list[int]()
    watcher = asyncio.create_task(_watch(ledgers[0], stop, seen))
    both = await asyncio.gather(
        *(settle(i, rid) for i, rid in first), *map(reserve, range(80, 200))
    )
    stop.set()
    await watcher
    later = [r for r in both[len(first) :] if r is not None and isinstance(r[1], str)]
    (usage,) = await ledgers[1].budget_left([GLOBAL], NOW)
    assert usage.spent_micros == FITS * QUOTE // 2
    assert usage.reserved_micros == len(later) * QUOTE
    assert usage.used_micros <= GLOBAL.limit_micros
    assert max(seen) <= GLOBAL.limit_micros


async def test_a_dead_replicas_reservations_are_settled_once_by_two_live_ones(
    replicas: list[PgDatabase],
) -> None:
    dead, alive_a, alive_b = (PgLedger(db) for db in replicas[:3])
    held = [
        await dead.reserve([GLOBAL], QUOTE, NOW + i, "dead:1:1", _row(0, rid=f"req-{i}"))
        for i in range(20)
    ]
    assert all(isinstance(r, str) for r in held)
    swept = await asyncio.gather(
        alive_a.resolve_orphans("alive-a:1:1", NOW + 100, lease=60),
        alive_b.resolve_orphans("alive-b:1:1", NOW + 100, lease=60),
    )
    settled = sorted(row.request_id or "" for rows in swept for row in rows)
    assert settled == sorted(f"req-{i}" for i in range(20))
    totals = await PgLedgerReports(replicas[3]).totals()
    assert (totals["orphaned"], totals["orphaned_micros"]) == (20, 20 * QUOTE)
    assert totals["open_reservations"] == 0
    (usage,) = await alive_a.budget_left([GLOBAL], NOW + 100)
    assert (usage.spent_micros, usage.reserved_micros) == (20 * QUOTE, 0)


async def test_a_live_replicas_heartbeat_keeps_its_reservations(
    replicas: list[PgDatabase],
) -> None:
    mine, other = PgLedger(replicas[0]), PgLedger(replicas[1])
    rid = await mine.reserve([GLOBAL], QUOTE, NOW, "mine:1:1")
    assert isinstance(rid, str)
    for t in (30, 60, 90):  # its own sweep every 30 s is its heartbeat
        assert await mine.resolve_orphans("mine:1:1", NOW + t, lease=60) == []
        assert await other.resolve_orphans("other:1:1", NOW + t + 1, lease=60) == []
    await mine.settle(rid, _row(QUOTE, rid=rid))
    (usage,) = await other.budget_left([GLOBAL], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (QUOTE, 0)


async def test_ten_thousand_hit_rows_go_in_one_call(replicas: list[PgDatabase]) -> None:
    ledger, reports = PgLedger(replicas[0]), PgLedgerReports(replicas[1])
    hits = [_row(0, key=f"key-{i % 4}", cache="HIT", rid=f"h{i}") for i in range(10_000)]
    await ledger.record([*hits, _row(QUOTE, rid="costed")])
    totals = await reports.totals()
    assert totals["hit_ratio"] == 10_000 / 10_001
    assert totals["spend_micros"] == QUOTE
    by_key = {r["key"]: r["hits"] for r in await reports.spend_by("key")}
    assert by_key == {f"key-{i}": 2_500 for i in range(4)}
    (usage,) = await ledger.budget_left([GLOBAL], NOW)
    assert usage.spent_micros == QUOTE
    assert [r.cache for r in await reports.rows(limit=1)] == ["MISS"]
    assert (await reports.rows(limit=1, offset=1))[0].cache == "HIT"


async def test_an_owner_known_dead_is_swept_before_its_lease(replicas: list[PgDatabase]) -> None:
    def state(owner: str) -> OwnerState:
        return "dead" if owner == "gone:1:1" else "unknown"

    ledger = PgLedger(replicas[0], state)
    dead = await ledger.reserve([GLOBAL], QUOTE, NOW, "gone:1:1")
    quiet = await ledger.reserve([GLOBAL], QUOTE, NOW, "quiet:1:1")
    assert isinstance(dead, str) and isinstance(quiet, str)
    (orphan,) = await ledger.resolve_orphans("me:1:1", NOW + 1, lease=60)
    assert (orphan.cost_micros, orphan.key_name, orphan.ts) == (QUOTE, None, NOW)
    (usage,) = await ledger.budget_left([GLOBAL], NOW + 1)
    assert (usage.spent_micros, usage.reserved_micros) == (QUOTE, QUOTE)  # quiet's still held
