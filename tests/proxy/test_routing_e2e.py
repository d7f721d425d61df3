"""Routing end to end: the gateway with its real adapters in front of the fake upstreams.

The official openai SDK is the client; the gateway's adapters use the real openai and
replicate SDKs against loopback servers that speak their wire protocols (tests/fakes).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import replace

import openai
import pytest
from PIL import Image

from proxy.config import ProviderSettings, RoutingSettings, Secret
from tests.conftest import Gateway
from tests.fakes.images import make_mask, make_png
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replicate_server import FakeReplicate


@pytest.fixture
async def upstreams():
    async with FakeOpenAI() as oai, FakeReplicate() as rep:
        yield oai, rep


async def start(settings, clock, upstreams, replicate_rpm=None, **routing) -> Gateway:
    from aiohttp.test_utils import TestServer

    from proxy.app import create_app
    from tests.conftest import CountingProvider

    oai, rep = upstreams
    providers = {
        "openai": ProviderSettings(
            name="openai",
            kind="openai",
            api_key=Secret("sk-test"),
            base_url=oai.base_url,
            timeout_seconds=2,
        ),
        "replicate": ProviderSettings(
            name="replicate",
            kind="replicate",
            api_key=Secret("r8_test"),
            base_url=rep.base_url,
            timeout_seconds=2,
            requests_per_minute=replicate_rpm,
        ),
    }
    settings = replace(settings, providers=providers, routing=replace(RoutingSettings(), **routing))
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1")
    await server.start_server()
    return Gateway(server, CountingProvider(), clock)


async def gen(gw: Gateway, **kw):
    kw.setdefault("prompt", "a lighthouse with the word OPEN")
    kw.setdefault("size", "1024x1024")
    raw = await gw.client().images.with_raw_response.generate(**kw)
    return raw.headers, raw.parse()


def size_of(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


async def test_auto_goes_to_the_cheapest_and_costs_the_catalog_price(settings, clock, upstreams):
    oai, rep = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        headers, body = await gen(gw, model="auto", n=2)
        assert headers["x-imagegate-model"] == "flux-schnell"
        assert headers["x-imagegate-provider"] == "replicate"
        assert headers["x-imagegate-cost-usd"] == "0.006"  # 2 x $0.003
        assert size_of(body.data[0].b64_json) == (1024, 1024)
        [create] = rep.requests_to("/predictions", "POST")
        assert create.json["input"]["num_outputs"] == 2
        assert create.json["input"]["aspect_ratio"] == "1:1"
        assert create.headers["Authorization"] == "Bearer r8_test"
        assert not oai.requests_to("/images")
    finally:
        await gw.close()


async def test_text_goes_to_a_text_model_billed_from_usage(settings, clock, upstreams):
    oai, _ = upstreams
    gw = await start(settings, clock, upstreams)
    prompt = "a bakery sign that says FRESH BREAD"
    try:
        headers, body = await gen(gw, model="text", prompt=prompt)
        assert headers["x-imagegate-model"] == "gpt-image-1-mini"
        [call] = oai.requests_to("/images/generations")
        assert "response_format" not in call.json
        assert call.json["model"] == "gpt-image-1-mini"
        # The fake bills ceil(len(prompt)/4) text tokens and 4160 output tokens (auto -> high);
        # gpt-image-1-mini: $2 per 1M text tokens, $8 per 1M image output tokens.
        micros = math.ceil((math.ceil(len(prompt) / 4) * 2_000_000 + 4160 * 8_000_000) / 1e6)
        assert headers["x-imagegate-cost-usd"] == f"{micros / 1e6:g}"
        assert body.usage.total_tokens == 0  # the gateway's own echo, not the upstream bill
    finally:
        await gw.close()


async def test_an_edit_with_a_mask_goes_only_to_models_that_take_masks(settings, clock, upstreams):
    oai, rep = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        raw = await gw.client().images.with_raw_response.edit(
            model="auto",
            prompt="add a red door",
            image=("house.png", make_png(64, 64), "image/png"),
            mask=("mask.png", make_mask(64, 64), "image/png"),
            size="1024x1024",
        )
        assert raw.headers["x-imagegate-model"].startswith("gpt-image")
        [edit] = oai.requests_to("/images/edits")
        fields = {f.field for f in edit.files}
        assert "mask" in fields and fields & {"image", "image[]"}
        assert not rep.requests_to("/predictions")
    finally:
        await gw.close()


async def test_a_pinned_model_is_honoured_and_fans_out(settings, clock, upstreams):
    _, rep = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        headers, body = await gen(gw, model="flux-1.1-pro", n=4)
        assert headers["x-imagegate-model"] == "flux-1.1-pro"
        assert len(rep.requests_to("/predictions", "POST")) == 4  # one image per prediction
        assert len({d.b64_json for d in body.data}) == 4
        assert headers["x-imagegate-cost-usd"] == "0.16"
    finally:
        await gw.close()


@pytest.mark.parametrize(
    ("commercial_only", "next_model"), [(False, "flux-dev"), (True, "flux-1.1-pro")]
)
async def test_fallback_on_500_respects_the_licence_policy(
    settings, clock, upstreams, commercial_only, next_model
):
    _, rep = upstreams
    gw = await start(settings, clock, upstreams, commercial_only=commercial_only)
    try:
        rep.fail_next(500, path="flux-schnell")
        headers, _ = await gen(gw, model="art")
        assert headers["x-imagegate-model"] == next_model
        assert (
            await gw.metric(
                "imagegate_fallbacks_total", from_model="flux-schnell", to_model=next_model
            )
            == 1
        )
    finally:
        await gw.close()


async def test_a_timeout_falls_back(settings, clock, upstreams):
    _, rep = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        rep.delay_next(4.0, path="flux-schnell")
        headers, _ = await gen(gw, model="auto")
        assert headers["x-imagegate-model"] != "flux-schnell"
        assert (
            await gw.metric(
                "imagegate_provider_calls_total",
                provider="replicate",
                model="flux-schnell",
                outcome="upstream_timeout",
            )
            == 1
        )
    finally:
        await gw.close()


async def test_a_circuit_opens_then_half_opens_and_closes(settings, clock, upstreams):
    _, rep = upstreams
    gw = await start(settings, clock, upstreams, breaker_failures=2, breaker_cooldown_seconds=30)
    try:
        rep.fail_next(503, times=2, path="flux-schnell")
        for i in range(2):
            headers, _ = await gen(gw, model="auto", prompt=f"kite {i}")
            assert headers["x-imagegate-model"] != "flux-schnell"
        assert await gw.metric("imagegate_circuit_state", model="flux-schnell") == 1
        before = len(rep.requests_to("flux-schnell"))
        headers, _ = await gen(gw, model="auto", prompt="kite 2")
        assert headers["x-imagegate-model"] != "flux-schnell"
        assert len(rep.requests_to("flux-schnell")) == before  # open: not even tried
        clock.advance(31)
        headers, _ = await gen(gw, model="auto", prompt="kite 3")
        assert headers["x-imagegate-model"] == "flux-schnell"  # the half-open probe worked
        assert await gw.metric("imagegate_circuit_state", model="flux-schnell") == 0
    finally:
        await gw.close()


async def test_a_corrupt_upstream_image_is_never_cached(settings, clock, upstreams):
    _, rep = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        rep.next_image(corrupt=True)
        with pytest.raises(openai.APIStatusError) as info:
            await gen(gw, model="flux-schnell")
        assert info.value.status_code == 502 and info.value.code == "invalid_output"
        headers, _ = await gen(gw, model="flux-schnell")
        assert headers["x-cache"] == "MISS"  # nothing was stored by the failure
        rep.next_image(blank=True)
        headers, _ = await gen(gw, model="auto", prompt="another")
        assert headers["x-imagegate-model"] != "flux-schnell"  # a blank image fell back
    finally:
        await gw.close()


async def test_a_retired_model_is_served_by_its_successor(settings, clock, upstreams):
    oai, _ = upstreams
    gw = await start(settings, clock, upstreams)
    try:
        headers, body = await gen(
            gw,
            model="dall-e-3",
            size="1792x1024",
            quality="hd",
            style="natural",
            response_format="b64_json",
        )
        assert headers["x-imagegate-model"] == "gpt-image-1.5"
        [call] = oai.requests_to("/images/generations")
        assert (call.json["model"], call.json["quality"], call.json["size"]) == (
            "gpt-image-1.5",
            "high",
            "1536x1024",
        )
        assert "style" not in call.json and "natural" in call.json["prompt"]
        assert size_of(body.data[0].b64_json) == (1792, 1024)
        assert body.data[0].revised_prompt
    finally:
        await gw.close()


async def test_an_upstream_rate_limit_is_kept_by_falling_back_not_by_collecting_429s(
    settings, clock, upstreams
):
    oai, rep = upstreams
    gw = await start(settings, clock, upstreams, replicate_rpm=1)
    try:
        first, _ = await gen(gw, model="auto", prompt="one")
        second, _ = await gen(gw, model="auto", prompt="two")
        assert first["x-imagegate-provider"] == "replicate"
        assert second["x-imagegate-provider"] == "openai"  # no token for 60 s: fell back
        assert len(rep.requests_to("/predictions", "POST")) == 1
        assert await gw.metric("imagegate_circuit_state", model="flux-schnell") == 0
    finally:
        await gw.close()
