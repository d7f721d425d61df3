"""How each call ends on the books: a fallback charges only the attempt that answered; a call
that answered but could not be stored is still charged (the upstream billed it); nothing
stays reserved after any of them."""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import replace
from decimal import Decimal

import aiohttp
import openai
import pytest

from policies.errors import ProviderTimeout, ProviderUnavailable
from proxy.config_cost import parse_cost
from proxy.stores.async_stores import ThreadedBlobStore
from proxy.stores.build import build_stores
from proxy.stores.disk import DiskBlobStore
from tests.conftest import PricedProvider, start_gateway

SECRET = "sk-web-app-0123456789abcdef"
ADMIN = "admin-secret-0123456789"


class FullDiskBlobs(DiskBlobStore):
    """A blob store whose disk is full: every put fails, as `OSError(ENOSPC)`."""

    def put(self, data: bytes) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")


def keyed(settings, budget_usd: float = 1.0):
    keys = [{"name": "web-app", "key": SECRET, "budget_usd": budget_usd}]
    return replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}, "keys": keys}))


def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


def books(settings) -> tuple[list[tuple], int]:
    """(model, cost, cache) of every ledger row, and the open reservations."""
    db = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    try:
        rows = db.execute("SELECT model, cost_micros, cache FROM ledger ORDER BY id").fetchall()
        return rows, db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        db.close()


async def budget_spent(gw) -> int:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http,
        http.get(gw.root + "/admin/spend") as got,
    ):
        [budget] = (await got.json())["budgets"]
        return micros(budget["spent_usd"])


@pytest.mark.parametrize("failure", [ProviderUnavailable("down"), ProviderTimeout("slow")])
async def test_a_fallback_charges_exactly_the_attempt_that_answered(settings, clock, failure):
    provider = PricedProvider(fail_next=[failure])
    settings = keyed(settings)
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        raw = await client.images.with_raw_response.generate(
            model="auto", prompt="a kite", size="1024x1024"
        )
        tried = [call.model.name for call in provider.calls]
        assert len(tried) == 2 and tried[0] == "flux-schnell"
        assert raw.headers["x-imagegate-model"] == tried[1]
        charged = micros(raw.headers["x-imagegate-cost-usd"])
        assert charged > 0
        assert books(settings) == ([(tried[1], charged, "MISS")], 0)
        assert await budget_spent(gw) == charged
        assert await gw.metric("imagegate_reservations_open") == 0
    finally:
        await gw.close()


async def test_when_every_attempt_fails_nothing_is_charged_or_held(settings, clock):
    provider = PricedProvider(fail_next=[ProviderUnavailable("down")] * 3)
    settings = keyed(settings)
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        with pytest.raises(openai.APIStatusError):
            await client.images.generate(model="auto", prompt="a kite", size="1024x1024")
        assert len(provider.calls) == 3
        assert books(settings) == ([], 0)
        assert await budget_spent(gw) == 0
    finally:
        await gw.close()


async def test_a_call_that_cannot_be_stored_is_charged_and_leaves_no_reservation(settings, clock):
    """The upstream answered (and billed us), then the blob store failed: the request fails,
    the books keep the charge, no reservation lingers, and a retry is a fresh miss."""
    provider = PricedProvider()
    settings = keyed(settings)
    blobs = FullDiskBlobs(settings.data_dir / "blobs")
    stores = build_stores(settings, blobs=ThreadedBlobStore(blobs))
    gw = await start_gateway(settings, provider, clock, serves_as="replicate", stores=stores)
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        with pytest.raises(openai.InternalServerError) as info:
            await client.images.generate(model="flux-schnell", prompt="a kite", size="1024x1024")
        assert info.value.code == "storage_failed" and "charged" in info.value.message
        assert info.value.response.headers["x-should-retry"] == "false"  # it would pay again
        assert len(provider.calls) == 1
        assert books(settings) == ([("flux-schnell", 3_000, "MISS")], 0)
        assert await budget_spent(gw) == 3_000
        assert await gw.metric(
            "imagegate_spend_usd_total", key="web-app", team="", model="flux-schnell"
        )
    finally:
        await gw.close()
