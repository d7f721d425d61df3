"""Offline (placeholder) mode shows routing: the model the router chose, drawn by the
placeholder. The official openai SDK is the client; the gateway is a real server."""

from __future__ import annotations

import aiohttp

from policies.catalog import Catalog
from policies.normalize import parse_generation
from policies.routing import RoutePolicy, plan_route
from proxy.app_keys import ACCOUNTS, CATALOG


def routed(catalog: Catalog, body: dict[str, object]) -> str:
    """What the router picks with every catalog provider configured."""
    request = parse_generation(body, catalog, default_model="gpt-image-1.5").request
    everyone = frozenset(spec.provider for spec in catalog.models.values())
    return plan_route(request, catalog, RoutePolicy(providers=everyone), images=1)[0].spec.name


async def test_auto_and_use_cases_report_the_routed_model_and_the_placeholder(gateway):
    client = gateway.client()
    catalog = gateway.app[CATALOG]
    chosen: dict[str, str] = {}
    for asked in ("auto", "logo", "photo"):
        body = {"model": asked, "prompt": f"a {asked} of a kite", "size": "1024x1024"}
        raw = await client.images.with_raw_response.generate(**body)
        model = raw.headers["x-imagegate-model"]
        assert model == routed(catalog, body)
        spec = catalog.models[model]
        assert not spec.virtual and spec.provider != "placeholder"
        assert set(catalog.models[asked].needs) <= set(spec.strengths)
        assert raw.headers["x-imagegate-provider"] == "placeholder"
        assert raw.headers["x-imagegate-cost-usd"] == "0"
        chosen[asked] = model
    assert [call.model.name for call in gateway.provider.calls] == list(chosen.values())
    assert chosen["auto"] == "flux-schnell"  # the cheapest, as online (README)

    again = await client.images.with_raw_response.generate(
        model="auto", prompt="a auto of a kite", size="1024x1024"
    )
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["x-imagegate-model"] == chosen["auto"]

    await gateway.app[ACCOUNTS].flush_hits()
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.root + "/admin/spend?by=model") as got,
    ):
        spend = await got.json()
    models = {row["model"] for row in spend["rows"]}
    assert models == set(chosen.values())  # never "auto" or "logo"


async def test_a_pinned_model_is_drawn_as_itself(gateway):
    client = gateway.client()
    raw = await client.images.with_raw_response.generate(
        model="gpt-image-1-mini", prompt="a kite", size="1024x1024"
    )
    assert raw.headers["x-imagegate-model"] == "gpt-image-1-mini"
    assert raw.headers["x-imagegate-provider"] == "placeholder"


async def test_a_retired_name_reports_its_successor(gateway):
    client = gateway.client()
    raw = await client.images.with_raw_response.generate(
        model="dall-e-3", prompt="a kite", size="1792x1024", quality="hd"
    )
    assert raw.headers["x-imagegate-model"] == "gpt-image-1.5"
    assert raw.parse().data[0].revised_prompt
