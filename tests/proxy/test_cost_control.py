"""Keys, budgets that cannot be overspent, rate limits, prompt policy: end to end."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import replace
from decimal import Decimal

import aiohttp
import httpx
import openai
import pytest

from proxy.config_cost import KeySettings, PolicySettings, parse_cost
from tests.conftest import PricedProvider, start_gateway

SECRET = "sk-web-app-0123456789abcdef"
ADMIN = "admin-secret-0123456789"


def with_cost(settings, **raw):
    return replace(settings, cost=parse_cost(raw))


def key(**kw) -> dict:
    return {"name": "web-app", "key": SECRET, "team": "growth", **kw}


@pytest.fixture
async def keyed(settings, provider, clock):
    settings = with_cost(settings, auth={"admin_key": ADMIN}, keys=[key()])
    gw = await start_gateway(settings, provider, clock)
    yield gw
    await gw.close()


async def gen(client: openai.AsyncOpenAI, prompt: str = "a kite", **kw):
    kw.setdefault("model", "flux-schnell")
    kw.setdefault("size", "1024x1024")
    raw = await client.images.with_raw_response.generate(prompt=prompt, **kw)
    return raw.headers, raw.parse()


async def test_keys_are_required_once_any_exists(keyed):
    async with aiohttp.ClientSession() as http:
        body = {"model": "gpt-image-1-mini", "prompt": "a kite"}
        async with http.post(keyed.base_url + "/images/generations", json=body) as got:
            assert got.status == 401
            assert (await got.json())["error"]["code"] == "invalid_api_key"
    wrong = openai.AsyncOpenAI(
        base_url=keyed.base_url, api_key="sk-wrong-0123456789abcdef", max_retries=0
    )
    ok = openai.AsyncOpenAI(base_url=keyed.base_url, api_key=SECRET, max_retries=0)
    keyed.clients += [wrong, ok]
    with pytest.raises(openai.AuthenticationError) as info:
        await gen(wrong, model="gpt-image-1-mini")
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(info.value.body)
    headers, _ = await gen(ok, model="gpt-image-1-mini")
    assert headers["x-cache"] == "MISS"


async def test_admin_issues_lists_and_revokes_keys(keyed):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(keyed.root + "/admin/keys", json={"name": "x"}) as denied:
            assert denied.status == 401
        async with http.post(
            keyed.root + "/admin/keys",
            headers=admin,
            json={
                "name": "batch",
                "team": "content",
                "budget_usd": 1.5,
                "models": ["auto", "flux-schnell"],
            },
        ) as made:
            assert made.status == 201
            issued = (await made.json())["key"]
        async with http.get(keyed.root + "/admin/keys", headers=admin) as listed:
            text = await listed.text()
            assert "batch" in text and issued not in text and SECRET not in text
        client = openai.AsyncOpenAI(base_url=keyed.base_url, api_key=issued, max_retries=0)
        keyed.clients.append(client)
        headers, _ = await gen(client)
        assert headers["x-cache"] == "MISS"
        with pytest.raises(openai.BadRequestError) as info:
            await gen(client, model="gpt-image-1.5")
        assert info.value.code == "model_not_allowed"
        async with http.delete(keyed.root + "/admin/keys/batch", headers=admin) as revoked:
            assert revoked.status == 200
    with pytest.raises(openai.AuthenticationError):
        await gen(client)


async def test_budget_admits_exactly_what_fits_under_a_burst(settings, clock):
    """200 concurrent misses; the key's budget fits exactly 10 flux-schnell images."""
    provider = PricedProvider()
    settings = with_cost(settings, keys=[key(budget_usd=0.03, budget_window="day")])
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        results = await asyncio.gather(
            *(gen(client, f"kite number {i}", size="256x256") for i in range(200)),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        denied = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(ok) == 10 and len(denied) == 190
        assert len(provider.calls) == 10
        error = denied[0]
        assert error.code == "insufficient_quota" and error.type == "insufficient_quota"
        assert error.response.headers["x-should-retry"] == "false"
        assert "key 'web-app'" in error.message and "resets" in error.message
        charged = sum(round(Decimal(h["x-imagegate-cost-usd"]) * 1_000_000) for h, _ in ok)
        assert charged == 30_000
        ledger = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
        total = ledger.execute("SELECT SUM(cost_micros) FROM ledger").fetchone()[0]
        assert total == 30_000
        # Spent out, but cache hits stay free and are still served.
        headers, _ = await gen(client, ok_prompt(results), size="256x256")
        assert headers["x-cache"] == "HIT" and headers["x-imagegate-cost-usd"] == "0"
    finally:
        await gw.close()


def ok_prompt(results) -> str:
    for i, r in enumerate(results):
        if not isinstance(r, BaseException):
            return f"kite number {i}"
    raise AssertionError("no success")


async def test_rate_limits_carry_openai_headers_and_the_sdk_backs_off(settings, provider):
    settings = with_cost(settings, keys=[key(requests_per_minute=60)])
    gw = await start_gateway(settings, provider, time.time)
    try:
        headers = {"Authorization": f"Bearer {SECRET}"}
        body = {"model": "gpt-image-1-mini", "prompt": "same", "size": "1024x1024"}
        async with aiohttp.ClientSession() as http:
            for _ in range(60):  # hits count against the request limit
                async with http.post(
                    gw.base_url + "/images/generations", json=body, headers=headers
                ) as got:
                    assert got.status == 200
                    assert int(got.headers["x-ratelimit-limit-requests"]) == 60
            async with http.post(
                gw.base_url + "/images/generations", json=body, headers=headers
            ) as limited:
                assert limited.status == 429
                assert int(limited.headers["Retry-After"]) >= 1
                assert limited.headers["x-ratelimit-remaining-requests"] == "0"
                assert limited.headers["x-ratelimit-reset-requests"].endswith("ms")
                assert (await limited.json())["error"]["code"] == "rate_limit_exceeded"
        seen: list[tuple[float, int, str | None]] = []  # (when, status, retry-after-ms)

        async def answered(response: httpx.Response) -> None:
            seen.append(
                (time.monotonic(), response.status_code, response.headers.get("retry-after-ms"))
            )

        hooks = {"response": [answered]}
        client = openai.AsyncOpenAI(
            base_url=gw.base_url,
            api_key=SECRET,
            max_retries=2,
            http_client=httpx.AsyncClient(event_hooks=hooks),
        )
        gw.clients.append(client)
        raw = await client.images.with_raw_response.generate(**body)
        assert raw.headers["x-cache"] == "HIT"
        assert raw.retries_taken >= 1
        (limited_at, status, wait_ms), (answered_at, ok, _) = seen[0], seen[-1]
        assert (status, ok) == (429, 200) and wait_ms is not None
        # The SDK waited what the 429 asked for (it obeys retry-after-ms as given).
        assert answered_at - limited_at >= int(wait_ms) / 1000 - 0.01
    finally:
        await gw.close()


async def test_denied_prompts_get_content_policy_violation(settings, provider, clock):
    settings = replace(
        settings,
        cost=replace(settings.cost, policy=PolicySettings(deny_patterns=(r"(?i)\bdeepfake\b",))),
    )
    gw = await start_gateway(settings, provider, clock)
    try:
        with pytest.raises(openai.BadRequestError) as info:
            await gen(gw.client(), "a Deepfake of a senator", model="gpt-image-1-mini")
        assert info.value.code == "content_policy_violation" and info.value.param == "prompt"
        assert not provider.calls
    finally:
        await gw.close()


async def test_no_secret_reaches_a_response_log_metric_or_ledger_row(settings, clock, capfd):
    provider = PricedProvider()
    settings = with_cost(settings, auth={"admin_key": ADMIN}, keys=[key(budget_usd=1.0)])
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        texts = []
        for _ in range(2):
            headers, body = await gen(client)
            texts += [json.dumps(dict(headers)), body.model_dump_json()]
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/admin/spend?by=key", "/admin/keys", "/v1/models"):
                async with http.get(
                    gw.root + path, headers={"Authorization": f"Bearer {ADMIN}"}
                ) as got:
                    texts.append(await got.text())
    finally:
        await gw.close()
    out, err = capfd.readouterr()
    dump = "\n".join([*texts, out, err])
    dump += (settings.data_dir / "ledger.sqlite3").read_bytes().decode("latin-1")
    for secret in (SECRET, ADMIN):
        assert secret not in dump
    assert "web-app" in dump  # the key's name is fine to show


def test_cost_config_errors_name_their_path():
    from proxy.config_cost import CostConfigError

    for raw, path in (
        ({"keys": [{"name": "a", "key": "short"}]}, "keys[0].key"),
        ({"keys": [{"name": "a", "key": "x" * 20, "budget_usd": -1}]}, "keys[0].budget_usd"),
        (
            {"budgets": {"teams": {"growth": {"usd": 1, "window": "week"}}}},
            "budgets.teams.growth.window",
        ),
        ({"policy": {"deny_patterns": ["("]}}, "policy.deny_patterns[0]"),
    ):
        with pytest.raises(CostConfigError) as info:
            parse_cost(raw)
        assert info.value.path == path
    assert parse_cost({"keys": [key(budget_usd=0.1)]}).keys[0] == KeySettings(
        name="web-app",
        secret=SECRET,
        team="growth",
        budget_micros=100_000,
        budget_window="day",
        requests_per_minute=None,
        images_per_minute=None,
        models=None,
    )


async def test_budget_pressure_sends_use_cases_to_the_cheap_tier(settings, clock):
    provider = PricedProvider()
    settings = with_cost(settings, keys=[key(budget_usd=0.06)], budgets={"pressure_share": 0.5})
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        headers, _ = await gen(client, "portrait 1", model="photo")
        assert headers["x-imagegate-model"] == "flux-dev"  # $0.025: under half the budget
        headers, _ = await gen(client, "portrait 2", model="photo")
        assert headers["x-imagegate-model"] == "flux-dev"  # now $0.05 of $0.06 spent
        with pytest.raises(openai.APIStatusError) as info:
            await gen(client, "portrait 3", model="photo")  # no photo model is cheap-tier
        assert info.value.status_code == 503 and "budget pressure" in info.value.message
        headers, _ = await gen(client, "a kite", model="auto")
        assert headers["x-imagegate-model"] == "flux-schnell"  # the cheap tier still serves
    finally:
        await gw.close()


async def test_an_evicted_blob_is_a_miss_not_an_error(settings, provider, clock):
    # Each 1024x1024 placeholder PNG is about 38 KB; the bound (plus the index) holds two.
    settings = replace(settings, cache=replace(settings.cache, max_bytes=120_000))
    gw = await start_gateway(settings, provider, clock)
    try:
        client = gw.client()
        for prompt in ("first", "second", "third", "fourth"):
            await gen(client, prompt, model="gpt-image-1-mini")
        assert await gw.metric("imagegate_cache_evictions_total") >= 1
        headers, body = await gen(client, "first", model="gpt-image-1-mini")
        assert headers["x-cache"] == "MISS" and body.data[0].b64_json
    finally:
        await gw.close()


@pytest.mark.parametrize(("shared", "second"), [(False, "MISS"), (True, "HIT")])
async def test_cache_is_scoped_by_team_unless_shared(settings, provider, clock, shared, second):
    other = "sk-other-team-0123456789"
    settings = with_cost(settings, keys=[key(), {"name": "b", "key": other, "team": "brand"}])
    settings = replace(settings, cache=replace(settings.cache, share_across_teams=shared))
    gw = await start_gateway(settings, provider, clock)
    try:
        growth = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        brand = openai.AsyncOpenAI(base_url=gw.base_url, api_key=other, max_retries=0)
        gw.clients += [growth, brand]
        first, _ = await gen(growth, model="gpt-image-1-mini")
        again, _ = await gen(brand, model="gpt-image-1-mini")
        assert (first["x-cache"], again["x-cache"]) == ("MISS", second)
    finally:
        await gw.close()


async def test_admin_rejects_budgets_beyond_any_real_amount(keyed):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=admin) as http:
        for method, path, body in (
            ("POST", "/admin/keys", {"name": "big", "budget_usd": 10**30}),
            ("PUT", "/admin/keys/web-app/budget", {"budget_usd": 10**30}),
            ("PUT", "/admin/keys/web-app/budget", {"budget_usd": "ten"}),
        ):
            async with http.request(method, keyed.root + path, json=body) as got:
                assert got.status == 400, await got.text()
                assert (await got.json())["error"]["param"] == "budget_usd"
