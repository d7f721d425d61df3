"""`build_stores`: every port from settings, in one place; started and closed as a whole."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from policies.ledger_models import KeyRecord, LedgerRow
from proxy.stores.build import Stores, build_stores


async def test_the_embedded_stores_serve_every_port_and_close(settings) -> None:
    stores = build_stores(settings)
    try:
        sha = await stores.blobs.put(b"\x89PNG not really")
        assert await stores.blobs.get(sha) == b"\x89PNG not really"
        await stores.keys.create(KeyRecord("web", None, 0.0), "sk-build-test-0000000000")
        assert [k.name for k in await stores.keys.list()] == ["web"]
        assert (await stores.reports.totals())["open_reservations"] == 0
        assert await stores.holds.holds() == {}
        assert await stores.experiments.experiments() == []
    finally:
        await stores.aclose()
    again = build_stores(settings)  # the files were closed cleanly and open again
    assert [k.name for k in await again.keys.list()] == ["web"]
    await again.aclose()


async def test_starters_run_in_order_and_closers_in_reverse(settings) -> None:
    seen: list[str] = []

    async def start(name: str) -> None:
        seen.append(f"start {name}")

    async def aclose_redis() -> None:
        seen.append("close redis")

    built = build_stores(settings)
    stores = replace(
        built,
        starters=(lambda: start("postgres"), lambda: start("redis")),
        closers=(*built.closers, lambda: seen.append("close postgres"), aclose_redis),
    )
    assert isinstance(stores, Stores)
    await stores.start()
    await stores.aclose()
    assert seen == ["start postgres", "start redis", "close redis", "close postgres"]


async def test_closing_the_stores_writes_a_settle_its_caller_left(settings) -> None:
    stores = build_stores(settings)
    rid = await stores.ledger.reserve([], 1_000, 1_700_000_000.0, "owner")
    assert isinstance(rid, str)
    row = LedgerRow(1_700_000_000.0, None, None, "k" * 64, "m", "p", 1, 1_000, 0, "MISS", "r")
    settling = asyncio.create_task(stores.ledger.settle(rid, row))
    await asyncio.sleep(0)  # queued for the next group commit
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settling

    await stores.aclose()  # drains the group committer before the ledger's file closes

    again = build_stores(settings)
    totals = await again.reports.totals()
    await again.aclose()
    assert (totals["spend_micros"], totals["open_reservations"]) == (1_000, 0)
