"""End to end: a real gateway server driven by the official openai SDK (async and sync)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os

import aiohttp
import openai
import pytest
from PIL import Image

from policies.errors import ProviderUnavailable
from tests.fakes.images import make_jpeg, make_mask, make_png

PROMPT = "A lighthouse at dusk, with the word OPEN on a sign"


def decode(b64: str) -> bytes:
    return base64.b64decode(b64)


async def generate(client: openai.AsyncOpenAI, **kw):
    kw.setdefault("model", "gpt-image-1-mini")
    kw.setdefault("prompt", PROMPT)
    kw.setdefault("size", "1024x1024")
    raw = await client.images.with_raw_response.generate(**kw)
    return raw.headers, raw.parse()


async def test_miss_then_hit_returns_the_same_bytes_for_free(gateway):
    client = gateway.client()
    h1, r1 = await generate(client, quality="low")
    h2, r2 = await generate(client, quality="low")
    assert (h1["x-cache"], h2["x-cache"]) == ("MISS", "HIT")
    assert h1["x-cache-key"] == h2["x-cache-key"] and len(h1["x-cache-key"]) == 64
    assert h2["x-imagegate-cost-usd"] == "0"
    assert h1["x-imagegate-model"] == "gpt-image-1-mini"
    assert h1["x-imagegate-provider"] == "placeholder"
    assert h1["x-request-id"] and h1["x-request-id"] != h2["x-request-id"]
    a, b = decode(r1.data[0].b64_json), decode(r2.data[0].b64_json)
    assert a == b
    assert Image.open(io.BytesIO(a)).size == (1024, 1024)
    assert r2.output_format == "png" and r2.size == "1024x1024" and r2.usage.total_tokens == 0
    assert len(gateway.provider.calls) == 1
    assert await gateway.metric("imagegate_cache_lookups_total", outcome="hit") == 1
    assert await gateway.metric("imagegate_cache_lookups_total", outcome="miss") == 1


async def test_sync_client_and_equivalent_bodies_share_an_entry(gateway):
    client = gateway.sync_client()
    first = await asyncio.to_thread(
        client.images.with_raw_response.generate,
        model="gpt-image-1-mini",
        prompt=PROMPT,
        size="1024x1024",
        user="alice",
    )
    # Same pixels: whitespace runs, explicit defaults and nulls do not change the key.
    second = await asyncio.to_thread(
        client.images.with_raw_response.generate,
        model="gpt-image-1-mini",
        prompt="  " + PROMPT.replace(" ", "   ") + "\n",
        size="1024x1024",
        quality="auto",
        background=None,
        user="bob",
    )
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.headers["x-cache-key"] == second.headers["x-cache-key"]


async def test_url_and_b64_modes_serve_one_entry(gateway):
    client = gateway.client()
    h1, r1 = await generate(client, response_format="b64_json")
    h2, r2 = await generate(client, response_format="url")
    assert h2["x-cache"] == "HIT"
    url = r2.data[0].url
    assert url.startswith(gateway.root + "/images/") and url.endswith(".png")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as got:
            body = await got.read()
            assert got.status == 200 and got.content_type == "image/png"
            assert got.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            etag = got.headers["ETag"]
        async with http.get(url, headers={"If-None-Match": etag}) as again:
            assert again.status == 304
    assert body == decode(r1.data[0].b64_json)
    assert etag == f'"{hashlib.sha256(body).hexdigest()}"'


async def test_dall_e_defaults_to_url_and_dalle3_revises(gateway):
    client = gateway.client()
    _, r = await generate(client, model="dall-e-3", size="1792x1024", quality="hd", style="natural")
    assert r.data[0].url and r.data[0].b64_json is None
    assert r.data[0].revised_prompt


async def test_public_base_url_is_used_for_image_urls(settings, provider, clock):
    from dataclasses import replace

    from tests.conftest import start_gateway

    settings = replace(
        settings, server=replace(settings.server, public_base_url="https://img.example.com")
    )
    gw = await start_gateway(settings, provider, clock)
    try:
        _, r = await generate(gw.client(), response_format="url")
        assert r.data[0].url.startswith("https://img.example.com/images/")
    finally:
        await gw.close()


async def test_partial_hits_generate_only_the_missing_indexes(gateway):
    client = gateway.client()
    _, one = await generate(client, n=1)
    h, three = await generate(client, n=3)
    assert h["x-cache"] == "PARTIAL"
    assert gateway.provider.calls[-1].indexes == (1, 2)
    images = [decode(d.b64_json) for d in three.data]
    assert images[0] == decode(one.data[0].b64_json)
    assert len(set(images)) == 3
    h, _ = await generate(client, n=2)
    assert h["x-cache"] == "HIT"


async def test_twenty_identical_misses_make_one_provider_call(gateway):
    gateway.provider.gate = asyncio.Event()
    client = gateway.client()
    tasks = [asyncio.create_task(generate(client)) for _ in range(20)]
    while not gateway.provider.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # let the other 19 arrive and join the flight
    gateway.provider.gate.set()
    results = await asyncio.gather(*tasks)
    assert len(gateway.provider.calls) == 1
    outcomes = sorted(h["x-cache"] for h, _ in results)
    assert outcomes == ["COALESCED"] * 19 + ["MISS"]
    assert len({r.data[0].b64_json for _, r in results}) == 1
    costs = [h["x-imagegate-cost-usd"] for h, _ in results]
    assert costs == ["0"] * 20


async def test_a_no_cache_request_never_joins_a_flight_in_progress(gateway):
    """no-cache asks for a fresh image: it makes its own call even while an identical
    request's call is in flight."""
    gateway.provider.gate = asyncio.Event()
    client = gateway.client()
    first = asyncio.create_task(generate(client))
    while not gateway.provider.calls:
        await asyncio.sleep(0.005)
    fresh = asyncio.create_task(generate(client, extra_headers={"Cache-Control": "no-cache"}))
    await asyncio.sleep(0.05)  # let it arrive while the first call is still gated
    gateway.provider.gate.set()
    (h1, _), (h2, _) = await asyncio.gather(first, fresh)
    assert (h1["x-cache"], h2["x-cache"]) == ("MISS", "BYPASS")
    assert len(gateway.provider.calls) == 2


async def test_a_failed_call_fails_every_waiter_and_caches_nothing(gateway):
    gateway.provider.gate = asyncio.Event()
    gateway.provider.fail_next.append(ProviderUnavailable("upstream is down"))
    client = gateway.client()
    tasks = [asyncio.create_task(generate(client)) for _ in range(5)]
    while not gateway.provider.calls:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    gateway.provider.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, openai.InternalServerError) for r in results)
    assert {r.status_code for r in results} == {503}
    assert {r.code for r in results} == {"upstream_unavailable"}
    assert len(gateway.provider.calls) == 1
    h, _ = await generate(client)
    assert h["x-cache"] == "MISS"  # nothing was cached by the failure


async def test_cache_control_directives(gateway):
    client = gateway.client()
    only = {"Cache-Control": "only-if-cached"}
    with pytest.raises(openai.APIStatusError) as info:
        await generate(client, extra_headers=only)
    assert info.value.status_code == 504 and info.value.code == "not_cached"
    assert not gateway.provider.calls

    h, _ = await generate(client, extra_headers={"Cache-Control": "no-store"})
    assert h["x-cache"] == "MISS" and len(gateway.provider.calls) == 1
    with pytest.raises(openai.APIStatusError):  # no-store stored nothing
        await generate(client, extra_headers=only)

    await generate(client)
    h, _ = await generate(client, extra_headers=only)
    assert h["x-cache"] == "HIT" and len(gateway.provider.calls) == 2

    h, _ = await generate(client, extra_headers={"Cache-Control": "no-cache"})
    assert h["x-cache"] == "BYPASS" and len(gateway.provider.calls) == 3

    gateway.clock.advance(120)
    h, _ = await generate(client, extra_headers={"Cache-Control": "max-age=60"})
    assert h["x-cache"] == "MISS" and len(gateway.provider.calls) == 4
    h, _ = await generate(client, extra_headers={"Cache-Control": "max-age=60"})
    assert h["x-cache"] == "HIT"


async def test_ttl_expires_entries(settings, provider, clock):
    from dataclasses import replace

    from tests.conftest import start_gateway

    settings = replace(settings, cache=replace(settings.cache, ttl_seconds=3600))
    gw = await start_gateway(settings, provider, clock)
    try:
        client = gw.client()
        await generate(client)
        clock.advance(3000)
        assert (await generate(client))[0]["x-cache"] == "HIT"
        clock.advance(700)
        assert (await generate(client))[0]["x-cache"] == "MISS"
    finally:
        await gw.close()


async def test_edits_are_keyed_by_image_content(gateway):
    client = gateway.client()
    red, blue = make_png(64, 64, (200, 0, 0)), make_png(64, 64, (0, 0, 200))

    async def edit(image, **kw):
        raw = await client.images.with_raw_response.edit(
            model="gpt-image-1.5", prompt="add a hat", image=image, size="1024x1024", **kw
        )
        return raw.headers, raw.parse()

    h1, r1 = await edit(red)  # raw bytes: filename "upload", application/octet-stream
    h2, _ = await edit(("other-name.png", red, "image/png"))
    h3, _ = await edit([blue])  # a list: the repeated image[] field
    assert (h1["x-cache"], h2["x-cache"], h3["x-cache"]) == ("MISS", "HIT", "MISS")
    assert h1["x-cache-key"] != h3["x-cache-key"]
    mask = make_mask(64, 64)
    h4, r4 = await edit(red, mask=mask)
    assert h4["x-cache"] == "MISS" and h4["x-cache-key"] != h1["x-cache-key"]
    assert Image.open(io.BytesIO(decode(r4.data[0].b64_json))).size == (1024, 1024)
    h5, _ = await edit(make_jpeg(64, 64, (200, 0, 0)))
    assert h5["x-cache"] == "MISS"
    assert decode(r1.data[0].b64_json) != decode(r4.data[0].b64_json)


async def test_variations_work_with_dall_e_2(gateway):
    client = gateway.client()
    image = make_png(256, 256, (10, 120, 30))
    with pytest.warns(DeprecationWarning, match="deprecated"):
        first = await client.images.with_raw_response.create_variation(
            image=image, n=2, size="256x256", response_format="b64_json"
        )
    assert first.headers["x-cache"] == "MISS"
    data = [decode(d.b64_json) for d in first.parse().data]
    assert len(set(data)) == 2
    assert Image.open(io.BytesIO(data[0])).size == (256, 256)


async def test_streaming_clients_get_completed_events(gateway):
    client = gateway.client()
    await generate(client, n=1)
    stream = await client.images.generate(
        model="gpt-image-1-mini", prompt=PROMPT, size="1024x1024", stream=True, partial_images=2
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.completed"]
    assert events[0].size == "1024x1024" and events[0].output_format == "png"
    _, plain = await generate(client)
    assert events[0].b64_json == plain.data[0].b64_json


async def test_models_health_and_metrics(gateway):
    client = gateway.client()
    models = await client.models.list()
    ids = {m.id for m in models.data}
    assert {"gpt-image-1.5", "gpt-image-1-mini", "dall-e-3", "gpt-image-2-2026-04-21"} <= ids
    async with aiohttp.ClientSession() as http:
        for path, status in (("/healthz", 200), ("/readyz", 200)):
            async with http.get(gateway.root + path) as got:
                assert got.status == status
        await generate(client)
        async with http.get(gateway.root + "/metrics") as got:
            text = await got.text()
    assert (
        'imagegate_http_requests_total{method="POST",route="/v1/images/generations",status="200"}'
        in text
    )
    assert 'imagegate_cache_lookups_total{outcome="miss"} 1.0' in text
    assert PROMPT not in text


async def test_a_corrupted_blob_is_healed_not_served(gateway):
    client = gateway.client()
    h, r = await generate(client)
    good = decode(r.data[0].b64_json)
    sha = hashlib.sha256(good).hexdigest()
    blob_file = gateway.blobs.open(sha)
    assert blob_file is not None
    # Same size, same inode; the mtime moved even where the filesystem clock is coarse (as
    # `flip` in the store contract suite), so the test does not depend on the clock's tick.
    before = blob_file.path.stat()
    blob_file.path.write_bytes(good[:100] + b"\x00" * 50 + good[150:])
    after = blob_file.path.stat()
    if after.st_mtime_ns == before.st_mtime_ns:
        os.utime(blob_file.path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.root}/images/{sha}.png") as got:
            assert got.status == 404
    h2, r2 = await generate(client)
    assert h2["x-cache"] == "MISS"  # the entry's blob was gone, so it was generated again
    assert decode(r2.data[0].b64_json) == good
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.root}/images/{sha}.png") as got:
            assert got.status == 200 and await got.read() == good


async def test_store_metrics_count_entries_bytes_and_healed_blobs(gateway):
    client = gateway.client()
    _, r = await generate(client, n=2)
    good = decode(r.data[0].b64_json)
    assert await gateway.metric("imagegate_cache_entries") == 2
    assert await gateway.metric("imagegate_cache_blobs") == 2
    assert await gateway.metric("imagegate_cache_bytes") > len(good)
    blob_file = gateway.blobs.open(hashlib.sha256(good).hexdigest())
    blob_file.path.write_bytes(b"\x89PNG not really")
    await generate(client, n=2)
    assert await gateway.metric("imagegate_blobs_healed_total") == 1


async def test_models_list_says_why_a_model_is_unavailable(gateway):
    async with aiohttp.ClientSession() as http, http.get(gateway.base_url + "/models") as got:
        models = {m["id"]: m for m in (await got.json())["data"]}
    assert models["midjourney-v6.1"]["available"] is False
    assert "no official API" in models["midjourney-v6.1"]["unavailable_reason"]
    assert models["flux-dev"]["licence"] == "non-commercial"
    assert models["text"]["virtual"] is True and models["text"]["needs"] == ["text"]
    with pytest.raises(openai.BadRequestError) as info:
        await generate(gateway.client(), model="midjourney-v6.1")
    assert info.value.code == "model_unavailable" and "no official API" in info.value.message
