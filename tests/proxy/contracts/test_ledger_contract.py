"""The Ledger contract, over every adapter: what a PostgreSQL ledger must also do."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.budget import BudgetSpec, Denied
from policies.ledger_models import ORPHANED, LedgerRow
from proxy.app_keys import METRICS
from proxy.ports import Ledger
from proxy.stores.embedded import SqliteLedgerPort
from proxy.stores.ledger import SqliteLedger
from proxy.stores.memory_ledger import MemoryLedger
from proxy.stores.owners import OwnerState
from tests.backends.postgres import postgres_stores
from tests.conftest import Gateway

NOW = 1_700_000_000.0
GLOBAL = BudgetSpec("global", "", 1_000, "day")
TEAM = BudgetSpec("team", "red", 600, "day")
KEY = BudgetSpec("key", "web", 400, "month")
ELSEWHERE = "other-host:4242:99"  # an owner on another host: judged by its heartbeat


def _state(owner: str) -> OwnerState:
    return "unknown"  # every owner is on another host: the lease alone decides


def _row(cost: int, *, ts: float = NOW, key: str | None = "web", rid: str = "r") -> LedgerRow:
    return LedgerRow(ts, key, "red", "k" * 64, "gpt-image-1", "openai", 1, cost, 0, "MISS", rid)


def _sqlite(tmp: Path) -> tuple[Ledger, Callable[[], None]]:
    db = SqliteLedger(tmp / "ledger.sqlite3")
    return SqliteLedgerPort(db, state=_state), db.close


FACTORIES: dict[str, Callable[[Path], tuple[Ledger, Callable[[], None]]]] = {
    "sqlite": _sqlite,
    "memory": lambda _: (MemoryLedger(state=_state), lambda: None),
}


@pytest.fixture(params=[*sorted(FACTORIES), "postgres"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    if request.param == "postgres":
        async with postgres_stores(state=_state) as stores:
            yield stores.ledger
        return
    port, close = FACTORIES[request.param](tmp_path)
    yield port
    close()


async def _left(ledger: Ledger, spec: BudgetSpec, now: float = NOW) -> tuple[int, int]:
    (usage,) = await ledger.budget_left([spec], now)
    return usage.spent_micros, usage.reserved_micros


async def test_reserve_holds_on_every_budget_and_spend_is_rows_only(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL, TEAM, KEY], 300, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    for spec in (GLOBAL, TEAM, KEY):
        assert await _left(ledger, spec) == (0, 300)
    await ledger.settle(rid, _row(250))
    for spec in (GLOBAL, TEAM, KEY):
        assert await _left(ledger, spec) == (250, 0)


async def test_reserve_is_all_or_nothing(ledger: Ledger) -> None:
    denied = await ledger.reserve([GLOBAL, KEY], 500, NOW, ELSEWHERE)  # KEY allows 400
    assert isinstance(denied, Denied)
    assert denied.usage.spec == KEY
    assert await _left(ledger, GLOBAL) == (0, 0)


async def test_concurrent_reserves_never_exceed_a_budget(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(ledger.reserve([GLOBAL, TEAM], 70, NOW, ELSEWHERE) for _ in range(20))
    )
    granted = [r for r in results if isinstance(r, str)]
    assert len(granted) == 600 // 70  # TEAM is the tightest
    assert len(set(granted)) == len(granted)
    assert all(isinstance(r, Denied) for r in results if not isinstance(r, str))
    assert await _left(ledger, TEAM) == (0, 70 * len(granted))


async def test_settled_spend_and_reservations_share_the_limit(ledger: Ledger) -> None:
    first = await ledger.reserve([KEY], 300, NOW, ELSEWHERE)
    assert isinstance(first, str)
    await ledger.settle(first, _row(300))
    assert isinstance(await ledger.reserve([KEY], 101, NOW, ELSEWHERE), Denied)
    assert isinstance(await ledger.reserve([KEY], 100, NOW, ELSEWHERE), str)


async def test_release_frees_the_reservation_and_charges_nothing(ledger: Ledger) -> None:
    rid = await ledger.reserve([KEY], 400, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    await ledger.release(rid)
    assert await _left(ledger, KEY) == (0, 0)
    assert isinstance(await ledger.reserve([KEY], 400, NOW, ELSEWHERE), str)


async def test_settle_is_idempotent(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 300, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    await ledger.settle(rid, _row(200))
    await ledger.settle(rid, _row(200))
    assert await _left(ledger, GLOBAL) == (200, 0)


async def test_windows_reset_with_the_clock(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 900, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    await ledger.settle(rid, _row(900))
    tomorrow = NOW + 86_400
    assert await _left(ledger, GLOBAL, tomorrow) == (0, 0)
    assert isinstance(await ledger.reserve([GLOBAL], 900, tomorrow, ELSEWHERE), str)


async def test_a_silent_owners_reservation_is_settled_at_its_quote_after_the_lease(
    ledger: Ledger,
) -> None:
    draft = _row(0, rid="req-1")
    rid = await ledger.reserve([GLOBAL, KEY], 350, NOW, ELSEWHERE, draft)
    assert isinstance(rid, str)
    assert await ledger.resolve_orphans("me:1:1", NOW + 59, lease=60) == []
    orphans = await ledger.resolve_orphans("me:1:1", NOW + 61, lease=60)
    assert [(o.cost_micros, o.cache, o.request_id, o.ts) for o in orphans] == [
        (350, ORPHANED, "req-1", NOW)
    ]
    assert await _left(ledger, KEY, NOW + 61) == (350, 0)
    assert await ledger.resolve_orphans("me:1:1", NOW + 200, lease=60) == []


async def test_a_heartbeat_keeps_an_owners_reservations(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 100, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    await ledger.resolve_orphans(ELSEWHERE, NOW + 50, lease=60)  # its own sweep: a heartbeat
    assert await ledger.resolve_orphans("me:1:1", NOW + 100, lease=60) == []
    assert len(await ledger.resolve_orphans("me:1:1", NOW + 111, lease=60)) == 1


async def test_a_late_settle_replaces_the_orphan_row(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 300, NOW, ELSEWHERE, _row(0))
    assert isinstance(rid, str)
    await ledger.resolve_orphans("me:1:1", NOW + 61, lease=60)
    await ledger.settle(rid, _row(120))
    assert await _left(ledger, GLOBAL) == (120, 0)


async def test_an_abandoned_call_is_charged_its_quote_at_once(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 300, NOW, ELSEWHERE, _row(0, rid="cut-off"))
    assert isinstance(rid, str)
    row = await ledger.abandon(rid)
    assert row is not None
    assert (row.cost_micros, row.cache, row.request_id) == (300, ORPHANED, "cut-off")
    assert await _left(ledger, GLOBAL) == (300, 0)
    assert await ledger.abandon(rid) is None
    await ledger.release(rid)  # too late: the orphan row stays
    assert await _left(ledger, GLOBAL) == (300, 0)


async def test_what_an_upstream_billed_beyond_the_quote_is_not_spend(ledger: Ledger) -> None:
    rid = await ledger.reserve([GLOBAL], 300, NOW, ELSEWHERE)
    assert isinstance(rid, str)
    await ledger.settle(rid, dataclasses.replace(_row(300), over_quote_micros=450))
    assert await _left(ledger, GLOBAL) == (300, 0)


async def test_rows_without_reservations(ledger: Ledger) -> None:
    hit = LedgerRow(NOW, "web", "red", "k" * 64, "gpt-image-1", "openai", 1, 0, 40, "HIT", "h")
    await ledger.record([hit, _row(75, rid="free-standing")])
    assert await _left(ledger, KEY) == (75, 0)


# --- what the gateway promises about its ledger reads: /metrics reads it off the loop ------


class _Witness(Collector):
    """A collector that notes which thread the scrape ran its collectors in."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        yield GaugeMetricFamily("witness", "the thread of the scrape", value=1)


async def test_metrics_collects_off_the_event_loop(gateway: Gateway) -> None:
    witness = _Witness()
    gateway.app[METRICS].registry.register(witness)
    async with aiohttp.ClientSession() as http, http.get(gateway.root + "/metrics") as got:
        assert got.status == 200
        text = await got.text()
    assert "imagegate_reservations_open" in text  # the ledger's collector ran in that scrape
    assert witness.threads
    assert threading.get_ident() not in witness.threads  # the loop's thread (the test's)
