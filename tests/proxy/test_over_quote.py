"""An upstream that bills beyond the quote: the budget holds, the excess is on the books,
the model is held open until an operator resets it. And: when a model is only waiting
(an upstream's Retry-After, a circuit's cool-down), clients are told to retry, and when."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from decimal import Decimal

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from proxy.app import create_app
from proxy.config import ProviderSettings, RoutingSettings, Secret
from proxy.config_cost import parse_cost
from tests.conftest import CountingProvider, Gateway
from tests.fakes.openai_server import FakeOpenAI

SECRET = "sk-web-app-0123456789abcdef"
ADMIN = "admin-secret-0123456789"
LOW = {"model": "gpt-image-1.5", "quality": "low", "size": "1024x1024"}


@pytest.fixture
async def fake():
    async with FakeOpenAI() as oai:
        yield oai


async def start(settings, clock, oai: FakeOpenAI, budget_usd: float = 0.05, **routing) -> Gateway:
    provider = ProviderSettings(
        name="openai", kind="openai", api_key=Secret("sk-test"), base_url=oai.base_url
    )
    settings = replace(
        settings,
        providers={"openai": provider},
        routing=replace(RoutingSettings(), **routing),
        cost=parse_cost(
            {
                "auth": {"admin_key": ADMIN},
                "keys": [{"name": "web-app", "key": SECRET, "budget_usd": budget_usd}],
            }
        ),
    )
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1")
    await server.start_server()
    gw = Gateway(server, CountingProvider(), clock)
    gw.clients.append(openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0))
    return gw


def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


async def gen(gw: Gateway, prompt: str, **kw):
    raw = await gw.clients[0].images.with_raw_response.generate(prompt=prompt, **{**LOW, **kw})
    return raw.headers


async def admin(gw: Gateway, method: str, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http,
        http.request(method, gw.root + path) as got,
    ):
        return got.status, await got.json()


async def test_a_budget_is_never_overspent_whatever_the_upstream_reports(settings, clock, fake):
    """The issue's case: usage.output_tokens = 100000 on gpt-image-1.5 ($3.20 a call) and
    five concurrent requests on a $0.05 budget."""
    fake.report_usage_next(times=5, output_tokens=100_000)
    gw = await start(settings, clock, fake)
    try:
        with capture_logs() as logs:
            answers = await asyncio.gather(*(gen(gw, f"a kite {i}") for i in range(5)))
        charged = [micros(h["x-imagegate-cost-usd"]) for h in answers]
        ledger = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
        spent, over = ledger.execute(
            "SELECT SUM(cost_micros), SUM(over_quote_micros) FROM ledger"
        ).fetchone()
        assert spent == sum(charged) <= 50_000  # each call charged at most its quote
        # Reported: 100k image tokens at $32/M and 2 text tokens at $5/M, five times.
        assert over == 5 * (100_000 * 32 + 2 * 5) - spent
        status, report = await admin(gw, "GET", "/admin/spend?by=model")
        assert status == 200
        [budget] = report["budgets"]
        assert micros(budget["spent_usd"]) == spent <= micros(budget["limit_usd"])
        assert report["over_quote_usd"] == report["rows"][0]["over_quote_usd"]
        assert micros(report["over_quote_usd"]) == over
        metric = await gw.metric(
            "imagegate_over_quote_usd_total", provider="openai", model="gpt-image-1.5"
        )
        assert metric * 1e6 == pytest.approx(over)
        warned = [e for e in logs if e["event"] == "budget.over_quote"]
        assert len(warned) == 5 and warned[0]["log_level"] == "warning"
        assert warned[0]["model"] == "gpt-image-1.5" and warned[0]["provider"] == "openai"

        # The model is held open: no further call until an operator resets it.
        calls = len(fake.requests_to("/images/generations"))
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, "another kite")
        assert info.value.status_code == 503 and "held open" in info.value.message
        assert "/admin/circuits/gpt-image-1.5/reset" in info.value.message
        assert info.value.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in info.value.response.headers
        assert len(fake.requests_to("/images/generations")) == calls
        assert await gw.metric("imagegate_circuit_state", model="gpt-image-1.5") == 1
    finally:
        await gw.close()

    gw = await start(settings, clock, fake, budget_usd=1.0)  # a restart keeps the hold
    try:
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, "another kite")
        assert "held open" in info.value.message
        assert await admin(gw, "POST", "/admin/circuits/gpt-image-1.5/reset") == (
            200,
            {"model": "gpt-image-1.5", "reset": True, "was_held": True},
        )
        headers = await gen(gw, "another kite")  # the fake reports true usage again
        assert headers["x-imagegate-model"] == "gpt-image-1.5"
        assert await gw.metric("imagegate_circuit_state", model="gpt-image-1.5") == 0
        assert (await admin(gw, "POST", "/admin/circuits/no-such-model/reset"))[0] == 404
    finally:
        await gw.close()


async def test_an_upstream_retry_after_tells_clients_when_to_retry(settings, clock, fake):
    gw = await start(settings, clock, fake, budget_usd=1.0)
    try:
        fake.fail_next(429, retry_after=7)
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, "a kite")  # the upstream's own answer, passed on
        assert info.value.response.headers["retry-after"] == "7"
        assert info.value.response.headers["x-should-retry"] == "true"
        clock.advance(2)
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, "a kite")  # not tried: the provider asked for 7 s
        error = info.value
        headers = error.response.headers
        assert error.status_code == 503 and error.code == "provider_waiting"
        assert "provider asked to wait" in error.message and "5 s" in error.message
        assert headers["x-should-retry"] == "true"
        assert headers["retry-after"] == "5" and headers["retry-after-ms"] == "5000"
        assert "circuit open after repeated failures" not in error.message
        assert len(fake.requests_to("/images/generations")) == 1
        clock.advance(5)
        assert (await gen(gw, "a kite"))["x-cache"] == "MISS"
    finally:
        await gw.close()


async def test_an_open_circuit_says_when_its_cooldown_ends(settings, clock, fake):
    gw = await start(settings, clock, fake, budget_usd=1.0, breaker_failures=2)
    try:
        fake.fail_next(500, times=2)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await gen(gw, "a kite")
        clock.advance(10)
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, "a kite")
        headers = info.value.response.headers
        assert info.value.status_code == 503 and info.value.code == "circuit_open"
        assert "circuit open" in info.value.message and "20 s" in info.value.message
        assert headers["retry-after"] == "20" and headers["x-should-retry"] == "true"
    finally:
        await gw.close()
