"""Orphaned reservations (DESIGN.md §6): a call whose process died is settled at its quote as
an ORPHANED row by a live process (at once for a dead process of this host, after its lease
for one elsewhere), shown in /admin/spend and /admin/orphans, and refundable once."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import aiohttp
import openai
import pytest

from policies.budget import BudgetSpec
from policies.ledger_models import LedgerRow
from proxy.app_keys import SERVICE, SWEEPER
from proxy.config_cost import parse_cost
from proxy.stores.ledger import SqliteLedger
from tests.conftest import ledger_of, start_gateway

ADMIN = "admin-secret-0123456789"
SECRET = "sk-web-app-0123456789abcdef"
ELSEWHERE = "replica-2.example:4242:777"  # a process on another host: only its lease tells
BUDGET = BudgetSpec("key", "web-app", 1_000_000, "day")


def draft(ts: float, **kw) -> LedgerRow:
    fields = {
        "ts": ts,
        "key_name": "web-app",
        "team": None,
        "request_key": "k" * 64,
        "model": "flux-dev",
        "provider": "replicate",
        "images": 1,
        "cost_micros": 25_000,
        "saved_micros": 0,
        "cache": "MISS",
        "request_id": "req-lost-in-flight",
        **kw,
    }
    return LedgerRow(**fields)


@pytest.fixture
async def gw(settings, provider, clock):
    keys = [{"name": "web-app", "key": SECRET, "budget_usd": 1.0}]
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}, "keys": keys}))
    gateway = await start_gateway(settings, provider, clock)
    yield gateway
    await gateway.close()


async def call(gw, method: str, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http,
        http.request(method, gw.root + path) as got,
    ):
        return got.status, await got.json()


async def test_a_dead_replicas_reservation_is_settled_after_its_lease(gw, clock):
    ledger = ledger_of(gw.app)
    sweeper = gw.app[SWEEPER]
    ledger.heartbeat(ELSEWHERE, clock.now)
    assert isinstance(ledger.reserve([BUDGET], 25_000, clock.now, ELSEWHERE, draft(0)), str)
    went_out = clock.now

    clock.advance(30)
    assert await sweeper.sweep() == []  # silent for 30 s: within its 40 s lease
    ledger.heartbeat(ELSEWHERE, clock.now)  # still alive: the lease starts again
    clock.advance(39)
    assert await sweeper.sweep() == []
    assert ledger.open_reservations() == 1
    assert ledger.budget_left([BUDGET], clock.now)[0].spent_micros == 0  # reserved, not spent

    clock.advance(2)  # 41 s since its last heartbeat: gone
    [orphan] = await sweeper.sweep()

    assert (orphan.cache, orphan.cost_micros, orphan.ts) == ("ORPHANED", 25_000, went_out)
    assert ledger.open_reservations() == 0
    assert ledger.budget_left([BUDGET], clock.now)[0].spent_micros == 25_000
    status, spend = await call(gw, "GET", "/admin/spend")
    assert status == 200
    assert (spend["orphaned"], spend["orphaned_usd"], spend["total_spend_usd"]) == (
        1,
        "0.025",
        "0.025",
    )
    [shown] = spend["orphans"]
    assert (shown["model"], shown["request_id"], shown["charged_usd"]) == (
        "flux-dev",
        "req-lost-in-flight",
        "0.025",
    )
    assert spend["rows"][0]["orphaned"] == 1
    assert await gw.metric("imagegate_reservations_orphaned_total") == 1
    assert await sweeper.sweep() == []  # settled once


async def test_an_orphan_is_refunded_once_and_frees_its_budget(gw, clock):
    ledger = ledger_of(gw.app)
    ledger.reserve([BUDGET], 25_000, clock.now, ELSEWHERE, draft(0))
    clock.advance(41)
    await gw.app[SWEEPER].sweep()
    status, listed = await call(gw, "GET", "/admin/orphans")
    assert status == 200
    [orphan] = listed["data"]
    assert orphan["refunded"] is False

    status, done = await call(gw, "POST", f"/admin/spend/{orphan['id']}/refund")
    assert (status, done) == (
        200,
        {"id": orphan["id"], "refunded_usd": "0.025", "already_refunded": False},
    )
    assert ledger.budget_left([BUDGET], clock.now)[0].spent_micros == 0
    status, again = await call(gw, "POST", f"/admin/spend/{orphan['id']}/refund")
    assert (status, again["already_refunded"], again["refunded_usd"]) == (200, True, "0.025")
    assert ledger.budget_left([BUDGET], clock.now)[0].spent_micros == 0  # not twice
    _, spend = await call(gw, "GET", "/admin/spend")
    assert (spend["total_spend_usd"], spend["refunded_usd"]) == ("0", "0.025")
    _, listed = await call(gw, "GET", "/admin/orphans")
    assert listed["data"][0]["refunded"] is True

    assert (await call(gw, "POST", "/admin/spend/999999/refund"))[0] == 404
    assert (await call(gw, "POST", "/admin/spend/abc/refund"))[0] == 400


async def test_only_orphaned_rows_refund_and_only_admins_refund(gw, clock):
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
    gw.clients.append(client)
    await client.images.generate(model="gpt-image-1-mini", prompt="a kite")
    row_id = sqlite3.connect(ledger_of(gw.app).path).execute("SELECT MAX(id) FROM ledger")
    [(number,)] = row_id.fetchall()
    status, body = await call(gw, "POST", f"/admin/spend/{number}/refund")
    assert status == 400 and body["error"]["code"] == "not_refundable"
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.root + f"/admin/spend/{number}/refund") as got,
    ):
        assert got.status == 401


def test_a_late_settle_replaces_the_orphan_with_the_true_cost(tmp_path):
    """A replica thought gone (its heartbeats stalled) settles after all: its true row
    replaces the orphan's, and the budget holds the true cost, once."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    try:
        reservation = ledger.reserve([BUDGET], 25_000, 1000.0, ELSEWHERE, draft(0))
        assert isinstance(reservation, str)
        assert len(ledger.resolve_orphans(1041.0, lease=40)) == 1
        ledger.settle(reservation, draft(1050.0, cost_micros=20_000))
        assert [(r.cache, r.cost_micros) for r in ledger.rows()] == [("MISS", 20_000)]
        assert ledger.budget_left([BUDGET], 1050.0)[0].spent_micros == 20_000
    finally:
        ledger.close()


def test_an_old_ledger_file_is_upgraded_in_place(tmp_path):
    """A ledger made before over-quote amounts, refunds and drafts keeps its rows."""
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE reservations (id TEXT PRIMARY KEY, owner TEXT NOT NULL,
          created REAL NOT NULL, amount_micros INTEGER NOT NULL, scopes_json TEXT NOT NULL);
        CREATE TABLE ledger (id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_name TEXT,
          team TEXT, request_key TEXT, model TEXT, provider TEXT, images INTEGER NOT NULL,
          cost_micros INTEGER NOT NULL, saved_micros INTEGER NOT NULL, cache TEXT,
          request_id TEXT, reservation TEXT UNIQUE);
        INSERT INTO ledger VALUES (1, 1000.0, 'web-app', NULL, 'k', 'flux-dev', 'replicate',
          1, 25000, 0, 'MISS', 'r1', 'res-1');
        INSERT INTO reservations VALUES ('res-2', 'gone-host:1:1', 1000.0, 3000,
          '["global:", "key:web-app"]');
        """
    )
    db.close()
    ledger = SqliteLedger(path)
    try:
        columns = {r[1] for r in ledger._db.execute("PRAGMA table_info(ledger)")}
        assert {"requests", "over_quote_micros", "refunded_micros"} <= columns
        assert [(r.model, r.cost_micros, r.requests) for r in ledger.rows()] == [
            ("flux-dev", 25_000, 1)
        ]
        [orphan] = ledger.resolve_orphans(2000.0, lease=40)  # a reservation with no draft
        assert (orphan.key_name, orphan.cost_micros, orphan.cache) == ("web-app", 3_000, "ORPHANED")
        assert ledger.money_totals()["orphaned_micros"] == 3_000
    finally:
        ledger.close()


async def test_a_call_cut_off_by_a_shutdown_is_charged_as_an_orphan(settings, clock):
    """Stopping the gateway cancels the calls in flight; the upstream may have billed them,
    so each is settled at its quote as an orphaned row, not released."""
    from tests.conftest import PricedProvider

    provider = PricedProvider(gate=asyncio.Event())  # never set: the call hangs upstream
    keys = [{"name": "web-app", "key": SECRET, "budget_usd": 1.0}]
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}, "keys": keys}))
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
    flying = asyncio.create_task(
        client.images.generate(model="flux-schnell", prompt="a kite", size="1024x1024")
    )
    while not provider.calls:
        await asyncio.sleep(0.01)
    await gw.app[SERVICE].aclose()  # what the shutdown does before the stores close
    await asyncio.gather(flying, return_exceptions=True)
    await client.close()
    await gw.close()
    ledger = SqliteLedger(settings.data_dir / "ledger.sqlite3")
    try:
        assert ledger.open_reservations() == 0
        assert [(r.cache, r.model, r.cost_micros) for r in ledger.rows()] == [
            ("ORPHANED", "flux-schnell", 3_000)
        ]
    finally:
        ledger.close()
