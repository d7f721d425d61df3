"""The CircuitHolds contract over every adapter, and the LedgerReports contract over the
SQLite and PostgreSQL adapters (its memory adapter comes with the reports' rewiring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from policies.budget import BudgetSpec
from policies.ledger_models import ORPHANED, LedgerRow
from proxy.ports import CircuitHolds, Ledger, LedgerReports
from proxy.stores.embedded import SqliteLedgerPort
from proxy.stores.ledger import SqliteLedger
from proxy.stores.memory_state import MemoryHolds
from tests.backends.postgres import postgres_stores

NOW = 1_700_000_000.0
GLOBAL = BudgetSpec("global", "", 10_000, "total")


def _sqlite(tmp: Path) -> tuple[CircuitHolds, Callable[[], None]]:
    db = SqliteLedger(tmp / "ledger.sqlite3")
    return SqliteLedgerPort(db), db.close


HOLDS: dict[str, Callable[[Path], tuple[CircuitHolds, Callable[[], None]]]] = {
    "sqlite": _sqlite,
    "memory": lambda _: (MemoryHolds(), lambda: None),
}


@pytest.fixture(params=[*sorted(HOLDS), "postgres"])
async def holds(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CircuitHolds]:
    if request.param == "postgres":
        async with postgres_stores() as stores:
            yield stores.holds
        return
    port, close = HOLDS[request.param](tmp_path)
    yield port
    close()


async def test_a_hold_stops_a_model_until_released(holds: CircuitHolds) -> None:
    await holds.hold_model("flux-pro", "billed beyond its quote", NOW)
    await holds.hold_model("flux-pro", "a second reason", NOW + 1)  # the first is kept
    assert await holds.holds() == {"flux-pro": "billed beyond its quote"}
    assert await holds.release_hold("flux-pro")
    assert not await holds.release_hold("flux-pro")
    assert await holds.holds() == {}


@pytest.fixture(params=["postgres", "sqlite"])
async def books(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Ledger, LedgerReports]]:
    """A ledger and the reports read from it (one object in SQLite, two in PostgreSQL)."""
    if request.param == "postgres":
        async with postgres_stores() as stores:
            yield stores.ledger, stores.reports
        return
    db = SqliteLedger(tmp_path / "ledger.sqlite3")
    port = SqliteLedgerPort(db, state=lambda _: "unknown")
    yield port, port
    db.close()


def _row(cost: int, cache: str = "MISS", model: str = "flux-schnell", **kw: object) -> LedgerRow:
    fields: dict[str, object] = dict(
        ts=NOW, key_name="web", team="red", request_key="k" * 64, model=model,
        provider="replicate", images=1, cost_micros=cost, saved_micros=0, cache=cache,
        request_id="req",
    )  # fmt: skip
    fields.update(kw)
    return LedgerRow(**fields)  # type: ignore[arg-type]


async def test_reports_add_up_spend_hits_and_orphans(
    books: tuple[Ledger, LedgerReports],
) -> None:
    reports, port = books
    await reports.record([_row(0, "HIT", saved_micros=300), _row(300)])
    rid = await reports.reserve([GLOBAL], 500, NOW, "other-host:1:1", _row(0, model="flux-pro"))
    assert isinstance(rid, str)
    totals = await port.totals()
    assert (totals["hit_ratio"], totals["open_reservations"], totals["spend_micros"]) == (
        0.5, 1, 300,
    )  # fmt: skip
    (orphan,) = await reports.resolve_orphans("me:1:1", NOW + 61, lease=60)
    assert orphan.cache == ORPHANED
    by_model = {r["model"]: r for r in await port.spend_by("model")}
    assert (by_model["flux-pro"]["spend_micros"], by_model["flux-pro"]["orphaned"]) == (500, 1)
    assert by_model["flux-schnell"]["hits"] == 1
    assert [r.cache for r in await port.rows(limit=2)] == [ORPHANED, "MISS"]
    (listed,) = await port.orphans()
    assert await port.refund(int(str(listed["id"]))) == (500, True)
    assert await port.refund(int(str(listed["id"]))) == (500, False)
    assert (await port.totals())["refunded_micros"] == 500
    assert (await port.totals())["spend_micros"] == 300


async def test_over_quote_is_reported_per_model(books: tuple[Ledger, LedgerReports]) -> None:
    ledger, reports = books
    await ledger.record([_row(100, over_quote_micros=40)])
    assert await reports.over_quote_by_model() == [("replicate", "flux-schnell", 40)]


async def test_spend_is_grouped_by_utc_day_and_team(books: tuple[Ledger, LedgerReports]) -> None:
    ledger, reports = books
    next_day = NOW + 86_400  # NOW is 2023-11-14T22:13:20Z
    await ledger.record([_row(100), _row(0, "HIT", saved_micros=100), _row(50, ts=next_day)])
    days = await reports.spend_by("day")
    assert [(d["day"], d["spend_micros"], d["hits"], d["misses"]) for d in days] == [
        ("2023-11-14", 100, 1, 1),
        ("2023-11-15", 50, 0, 1),
    ]
    (since,) = await reports.spend_by("team", since=next_day)
    assert (since["team"], since["spend_micros"], since["images"]) == ("red", 50, 1)
