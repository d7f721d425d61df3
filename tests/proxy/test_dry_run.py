"""Dry runs (`X-Imagegate-Dry-Run: 1`): the route, the cache outcome and the quote per
budget, with the same checks as the real request, and nothing spent. The official openai SDK
is the client; the gateway is a real server routing to a priced provider."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import aiohttp
import openai
import pytest

from proxy.app_keys import ACCOUNTS
from proxy.config_cost import parse_cost
from tests.conftest import PricedProvider, ledger_of, start_gateway
from tests.fakes.images import make_png

SECRET = "sk-web-app-0123456789abcdef"
TIGHT = "sk-tight-0123456789abcdefgh"
DRY = {"X-Imagegate-Dry-Run": "1"}


@pytest.fixture
async def priced(settings, clock):
    cost = parse_cost(
        {
            "keys": [
                {"name": "web-app", "key": SECRET, "team": "growth", "budget_usd": 1.0,
                 "models": ["auto", "flux-schnell", "flux-1.1-pro"]},
                {"name": "tight", "key": TIGHT, "budget_usd": 0.001},
            ],
            "budgets": {"global_usd": 10.0, "global_window": "month"},
        }
    )  # fmt: skip
    gw = await start_gateway(
        replace(settings, cost=cost), PricedProvider(), clock, serves_as="replicate"
    )
    yield gw
    await gw.close()


def client(gw, secret: str = SECRET) -> openai.AsyncOpenAI:
    made = openai.AsyncOpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
    gw.clients.append(made)
    return made


async def quote(sdk: openai.AsyncOpenAI, **kw):
    kw.setdefault("size", "1024x1024")
    raw = await sdk.images.with_raw_response.generate(extra_headers=DRY, **kw)
    assert raw.status_code == 200
    return raw.headers, raw.http_response.json()


def nothing_spent(gw) -> None:
    ledger = ledger_of(gw.app)
    assert gw.provider.calls == []
    assert ledger.rows() == []
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("SELECT COUNT(*) FROM reservations").fetchone() == (0,)


async def test_a_quote_names_the_route_and_each_budget_and_spends_nothing(priced):
    sdk = client(priced)
    headers, q = await quote(sdk, model="auto", prompt="a kite", n=2)
    assert q["object"] == "imagegate.quote" and q["dry_run"] is True
    assert q["cache"] == "MISS" and q["cached_images"] == 0 and q["images"] == 2
    assert q["route"][0] == {
        "model": "flux-schnell",
        "provider": "replicate",
        "quote_usd": "0.006",
        "catalog_quote_usd": "0.006",
    }
    assert q["quote_usd"] == "0.006" and q["fits"] is True
    budgets = {(b["scope"], b["name"]): b for b in q["budgets"]}
    assert budgets[("key", "web-app")]["left_usd"] == "1"
    assert budgets[("global", "global")]["limit_usd"] == "10"
    assert all(b["quote_usd"] == "0.006" and b["fits"] for b in q["budgets"])
    assert headers["x-imagegate-model"] == "flux-schnell"
    assert headers["x-imagegate-cost-usd"] == "0"
    assert headers["x-imagegate-quote-usd"] == "0.006"
    await priced.app[ACCOUNTS].flush_hits()
    nothing_spent(priced)

    real = await sdk.images.with_raw_response.generate(
        model="auto", prompt="a kite", n=2, size="1024x1024"
    )
    assert real.headers["x-cache"] == "MISS"
    assert real.headers["x-cache-key"] == q["request_key"]
    assert real.headers["x-imagegate-cost-usd"] == q["quote_usd"]

    _, again = await quote(sdk, model="auto", prompt="a kite", n=3)
    assert again["cache"] == "PARTIAL" and again["cached_images"] == 2
    assert again["quote_usd"] == "0.003"
    _, cached = await quote(sdk, model="auto", prompt="a kite", n=2)
    assert cached["cache"] == "HIT" and cached["route"] == [] and cached["quote_usd"] == "0"


async def test_a_quote_over_a_budget_says_so_where_the_real_request_is_refused(priced):
    sdk = client(priced, TIGHT)
    _, q = await quote(sdk, model="flux-1.1-pro", prompt="a kite")
    assert q["fits"] is False
    (own,) = [b for b in q["budgets"] if b["scope"] == "key"]
    assert own["fits"] is False and own["left_usd"] == "0.001" and own["quote_usd"] == "0.04"
    nothing_spent(priced)  # no reservation was tried: it would have been refused
    with pytest.raises(openai.RateLimitError) as info:
        await sdk.images.generate(model="flux-1.1-pro", prompt="a kite", size="1024x1024")
    assert info.value.code == "insufficient_quota"


async def test_a_dry_run_is_checked_like_the_real_request(priced):
    async with aiohttp.ClientSession() as http:
        body = {"model": "auto", "prompt": "a kite"}
        url = priced.base_url + "/images/generations"
        async with http.post(url, json=body, headers=DRY) as got:
            assert got.status == 401
        auth = {**DRY, "Authorization": f"Bearer {SECRET}"}
        bad = {**auth, "X-Imagegate-Dry-Run": "maybe"}
        async with http.post(url, json=body, headers=bad) as got:
            assert got.status == 400
            assert (await got.json())["error"]["param"] == "X-Imagegate-Dry-Run"
    sdk = client(priced)
    with pytest.raises(openai.BadRequestError) as info:
        await quote(sdk, model="gpt-image-1-mini", prompt="a kite")
    assert info.value.code == "model_not_allowed"
    with pytest.raises(openai.BadRequestError) as info:
        await quote(sdk, model="flux-schnell", prompt="a kite", size="999x999")
    assert info.value.param == "size"
    nothing_spent(priced)


async def test_offline_an_edit_is_quoted_at_0_with_the_catalog_price_beside(gateway):
    sdk = gateway.client()
    raw = await sdk.images.with_raw_response.edit(
        model="gpt-image-1-mini",
        image=("in.png", make_png(64, 64), "image/png"),
        prompt="make it blue",
        quality="low",
        size="1024x1024",
        extra_headers=DRY,
    )
    q = raw.http_response.json()
    assert q["object"] == "imagegate.quote" and q["cache"] == "MISS"
    (step,) = q["route"]
    assert step["model"] == "gpt-image-1-mini" and step["provider"] == "placeholder"
    assert step["quote_usd"] == "0" and step["catalog_quote_usd"] not in ("0", "")
    assert q["budgets"] == [] and q["fits"] is True
    nothing_spent(gateway)
