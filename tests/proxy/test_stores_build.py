"""`build_stores`: every port from settings, in one place; started and closed as a whole."""

from __future__ import annotations

from dataclasses import replace

from policies.ledger_models import KeyRecord
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
