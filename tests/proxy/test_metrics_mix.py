"""A scripted mix of traffic, then /metrics: the numbers add up with the traffic and the ledger."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.app_keys import ACCOUNTS
from proxy.config import Secret
from proxy.config_cost import parse_cost
from tests.proxy.test_routing_e2e import start, upstreams  # noqa: F401 - the fixture

SECRET = "sk-metrics-0123456789abc"
SCRAPE = "scrape-0123456789abcdef"  # [server] metrics_key: keys exist, so /metrics needs it


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def get(values, metric: str, **labels: str) -> float:
    return values.get((metric, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_add_up_after_a_mix_of_traffic(settings, clock, upstreams):  # noqa: F811
    _, rep = upstreams
    settings = replace(
        settings,
        server=replace(settings.server, metrics_key=Secret(SCRAPE)),
        cost=parse_cost(
            {
                "keys": [{"name": "app", "key": SECRET, "team": "t1", "budget_usd": 1.0}],
                "policy": {"deny_patterns": ["forbidden"]},
            }
        ),
    )
    gw = await start(settings, clock, upstreams)
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
    gw.clients.append(client)

    async def gen(prompt: str):
        return await client.images.with_raw_response.generate(
            model="auto", prompt=prompt, size="1024x1024"
        )

    try:
        assert (await gen("a")).headers["x-cache"] == "MISS"  # flux-schnell, $0.003
        assert (await gen("a")).headers["x-cache"] == "HIT"  # saved $0.003
        rep.fail_next(500, path="flux-schnell")
        fell = await gen("b")  # falls back to flux-dev
        assert fell.headers["x-imagegate-model"] == "flux-dev"
        with pytest.raises(openai.BadRequestError):
            await gen("something forbidden")  # prompt policy
        wrong = openai.AsyncOpenAI(
            base_url=gw.base_url, api_key="sk-nope-0123456789ab", max_retries=0
        )
        gw.clients.append(wrong)
        with pytest.raises(openai.AuthenticationError):
            await wrong.images.generate(model="auto", prompt="a")  # auth
        await gw.app[ACCOUNTS].flush_hits()
        bearer = {"Authorization": f"Bearer {SCRAPE}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(gw.root + "/metrics", headers=bearer) as got,
        ):
            values = scrape(await got.text())
    finally:
        await gw.close()

    route = "/v1/images/generations"
    assert (
        get(values, "imagegate_http_requests_total", route=route, method="POST", status="200") == 3
    )
    assert (
        get(values, "imagegate_http_requests_total", route=route, method="POST", status="400") == 1
    )
    assert (
        get(values, "imagegate_http_requests_total", route=route, method="POST", status="401") == 1
    )
    assert get(values, "imagegate_cache_lookups_total", outcome="miss") == 2
    assert get(values, "imagegate_cache_lookups_total", outcome="hit") == 1
    assert (
        get(
            values,
            "imagegate_provider_calls_total",
            provider="replicate",
            model="flux-schnell",
            outcome="ok",
        )
        == 1
    )
    assert (
        get(
            values,
            "imagegate_provider_calls_total",
            provider="replicate",
            model="flux-schnell",
            outcome="upstream_unavailable",
        )
        == 1
    )
    assert (
        get(
            values,
            "imagegate_provider_calls_total",
            provider="replicate",
            model="flux-dev",
            outcome="ok",
        )
        == 1
    )
    assert (
        get(values, "imagegate_fallbacks_total", from_model="flux-schnell", to_model="flux-dev")
        == 1
    )
    assert get(values, "imagegate_policy_denials_total", reason="prompt_policy") == 1
    assert get(values, "imagegate_policy_denials_total", reason="auth") == 1
    assert get(values, "imagegate_reservations_open") == 0

    ledger = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    by_model = dict(
        ledger.execute("SELECT model, SUM(cost_micros) FROM ledger GROUP BY model").fetchall()
    )
    saved = ledger.execute("SELECT SUM(saved_micros) FROM ledger").fetchone()[0]
    assert by_model == {"flux-schnell": 3_000, "flux-dev": 25_000}
    for model, micros in by_model.items():
        assert get(
            values, "imagegate_spend_usd_total", key="app", team="t1", model=model
        ) == pytest.approx(micros / 1e6)
    assert (
        get(values, "imagegate_saved_usd_total", key="app", team="t1", model="flux-schnell")
        == pytest.approx(saved / 1e6)
        == pytest.approx(0.003)
    )
    assert get(values, "imagegate_budget_remaining_usd", scope="key", name="app") == pytest.approx(
        1.0 - 0.028
    )
    assert get(values, "imagegate_budget_limit_usd", scope="key", name="app") == 1.0
