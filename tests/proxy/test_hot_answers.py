"""Repeated requests answered from memory (proxy/hot.py): same bytes, same accounting, same
rules as any hit: keys, model lists, rate limits, TTL, Cache-Control, scopes."""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import replace

import aiohttp
import openai
import pytest

from proxy.app_keys import ACCOUNTS, BLOB_MEMORY, HOT
from proxy.config import CacheSettings
from proxy.config_cost import parse_cost
from tests.conftest import PricedProvider, ledger_of, start_gateway

SECRET = "sk-hot-path-0123456789abcdef"
OTHER = "sk-hot-other-0123456789abcd"
ADMIN = "admin-secret-0123456789"
BODY = {"model": "flux-schnell", "prompt": "a lighthouse", "size": "1024x1024"}


def keyed(settings, **kw):
    keys = [
        {"name": "web", "key": SECRET, "team": "growth", **kw},
        {"name": "batch", "key": OTHER, "team": "content"},
    ]
    return replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}, "keys": keys}))


async def post(gw, body=BODY, secret=SECRET, **headers):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.base_url + "/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {secret}", **headers},
        ) as got:
            return got.status, got.headers, await got.read()


def ledger_rows(settings):
    db = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    try:
        return db.execute(
            "SELECT key_name, cache, cost_micros, saved_micros, images, requests, request_id "
            "FROM ledger ORDER BY ts"
        ).fetchall()
    finally:
        db.close()


async def test_a_repeat_is_answered_from_memory_with_the_same_bytes_and_a_ledger_row(
    settings, clock
):
    settings = keyed(settings)
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
        gw.clients.append(client)
        answers = []
        for step in range(4):
            clock.advance(1)
            raw = await client.images.with_raw_response.generate(**BODY)
            answers.append((raw.headers, raw.parse(), raw.http_response.content))
            if step == 1:  # the first hit went through the stores and was kept
                assert len(gw.app[HOT]) == 1
        outcomes = [h["x-cache"] for h, _, _ in answers]
        assert outcomes == ["MISS", "HIT", "HIT", "HIT"]
        images = {p.data[0].b64_json for _, p, _ in answers}
        assert len(images) == 1
        assert base64.b64decode(images.pop()).startswith(b"\x89PNG")
        # Hits from memory still say when: `created` is now, not when the answer was kept.
        assert [p.created for _, p, _ in answers] == [int(clock.now) - 3 + i for i in range(4)]
        last, kept = answers[3][0], answers[1][0]
        for name in ("x-cache-key", "x-imagegate-model", "x-imagegate-provider"):
            assert last[name] == kept[name]
        assert last["x-imagegate-cost-usd"] == "0"
        assert last["content-type"] == "application/json"
        assert last["x-request-id"] != kept["x-request-id"]
        # Same JSON as the hit that went through the stores, but for `created`.
        first_hit, third_hit = json.loads(answers[1][2]), json.loads(answers[3][2])
        assert {**first_hit, "created": 0} == {**third_hit, "created": 0}
        await gw.app[ACCOUNTS].flush_hits()
        # The three hits (one through the stores, two from memory) are counted: three
        # requests, three images, three times what the miss cost. They share one row when one
        # flush takes them all (tests/proxy/test_hit_tally.py); the background flush (every
        # 250 ms of real time) may split them on a slow machine, so the rows are summed.
        rows = ledger_rows(settings)
        assert [r[:6] for r in rows[:1]] == [("web", "MISS", 3_000, 0, 1, 1)]  # flux-schnell
        hits = rows[1:]
        assert {r[:2] for r in hits} == {("web", "HIT")}
        assert [sum(r[i] for r in hits) for i in (2, 3, 4, 5)] == [0, 9_000, 3, 3]
        assert rows[0][6] == answers[0][0]["x-request-id"]
        assert hits[0][6] == kept["x-request-id"]
        assert ledger_of(gw.app).hit_ratio() == 0.75
        assert await gw.metric("imagegate_cache_lookups_total", outcome="hit") == 3
        assert await gw.metric(
            "imagegate_saved_usd_total", key="web", team="growth", model="flux-schnell"
        ) == pytest.approx(0.009)
    finally:
        await gw.close()


async def test_keys_model_lists_and_rate_limits_hold_for_repeats(settings, clock):
    settings = keyed(settings, requests_per_minute=4, models=["flux-schnell"])
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        for _ in range(2):
            assert (await post(gw))[0] == 200
        assert len(gw.app[HOT]) == 1
        status, headers, _ = await post(gw)
        assert status == 200 and headers["x-cache"] == "HIT"
        assert headers["x-ratelimit-remaining-requests"] == "1"
        status, _, _ = await post(gw)
        assert status == 200
        status, headers, body = await post(gw)
        assert status == 429 and json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        # No key, a wrong key: the repeat is no way around authentication.
        assert (await post(gw, secret=""))[0] == 401
        assert (await post(gw, secret="sk-wrong-0123456789abcdef"))[0] == 401
        # Revoked: refused at once, though its answer is still in memory.
        async with aiohttp.ClientSession() as http:
            async with http.delete(
                gw.root + "/admin/keys/web", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as revoked:
                assert revoked.status == 200
        assert (await post(gw))[0] == 401
    finally:
        await gw.close()


async def test_a_model_the_key_may_not_use_is_refused_even_when_kept(settings, clock):
    settings = keyed(settings)
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        for _ in range(2):
            assert (await post(gw))[0] == 200
        # A key of the same team (same cache scope) that may not use this model.
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.root + "/admin/keys",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={"name": "narrow", "team": "growth", "models": ["gpt-image-1-mini"]},
            ) as made:
                assert made.status == 201
                narrow = (await made.json())["key"]
        status, _, body = await post(gw, secret=narrow)
        assert status == 400 and json.loads(body)["error"]["code"] == "model_not_allowed"
    finally:
        await gw.close()


async def test_scopes_cache_control_and_ttl_go_through_the_stores(settings, clock):
    settings = replace(keyed(settings), cache=CacheSettings(ttl_seconds=60))
    provider = PricedProvider()
    gw = await start_gateway(settings, provider, clock, serves_as="replicate")
    try:
        for _ in range(2):
            assert (await post(gw))[1]["x-cache"] in ("MISS", "HIT")
        assert len(gw.app[HOT]) == 1
        # Another team does not share the first team's cache, in memory or on disk.
        assert (await post(gw, secret=OTHER))[1]["x-cache"] == "MISS"
        # Cache-Control asks for a lookup of its own.
        assert (await post(gw, **{"Cache-Control": "no-cache"}))[1]["x-cache"] == "BYPASS"
        status, _, body = await post(
            gw, body={**BODY, "prompt": "never seen"}, **{"Cache-Control": "only-if-cached"}
        )
        assert status == 504
        assert (await post(gw))[1]["x-cache"] == "HIT"
        calls = len(provider.calls)
        clock.advance(61)  # the TTL ends the kept answer too
        status, headers, _ = await post(gw)
        assert status == 200 and headers["x-cache"] == "MISS"
        assert len(provider.calls) == calls + 1
    finally:
        await gw.close()


async def test_memory_mb_zero_keeps_nothing(settings, clock, provider):
    settings = replace(settings, cache=CacheSettings(memory_mb=0))
    gw = await start_gateway(settings, provider, clock)
    try:
        for _ in range(3):
            assert (await post(gw))[0] == 200
        assert len(gw.app[HOT]) == 0
        assert len(provider.calls) == 1
    finally:
        await gw.close()


async def test_a_different_host_gets_its_own_urls(settings, clock, provider):
    gw = await start_gateway(settings, provider, clock)
    body = {**BODY, "model": "dall-e-2", "response_format": "url"}
    try:
        for _ in range(2):
            assert (await post(gw, body=body))[0] == 200
        _, _, here = await post(gw, body=body)
        _, _, there = await post(gw, body=body, Host="images.example.com")
        assert json.loads(here)["data"][0]["url"].startswith(gw.root + "/images/")
        assert json.loads(there)["data"][0]["url"].startswith("http://images.example.com/images/")
    finally:
        await gw.close()


async def test_a_kept_blob_is_served_verified_even_if_the_disk_copy_rots(settings, clock, provider):
    gw = await start_gateway(settings, provider, clock)
    body = {**BODY, "model": "dall-e-2", "response_format": "url"}
    try:
        _, _, answer = await post(gw, body=body)
        url = json.loads(answer)["data"][0]["url"]
        sha = url.rsplit("/", 1)[1].split(".")[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as first:
                good = await first.read()
            assert gw.app[BLOB_MEMORY].get(sha) == good
            gw.blobs.open(sha).path.write_bytes(good[:100] + b"\x00" * 50 + good[150:])
            async with http.get(url) as again:
                assert again.status == 200 and await again.read() == good
            async with http.get(url, headers={"If-None-Match": f'"{sha}"'}) as cached:
                assert cached.status == 304
            async with http.get(url.replace(".png", ".webp")) as wrong:
                assert wrong.status == 404
    finally:
        await gw.close()
