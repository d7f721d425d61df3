"""`GET /v1/models` and the dashboard's provider health say what is configured, read with
the official openai SDK and over HTTP from a real gateway."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.config import ProviderSettings, Secret
from tests.conftest import CountingProvider, Gateway
from tests.fakes.replicate_server import FakeReplicate


@pytest.fixture
async def replicate_only(settings, clock):
    """Replicate has credentials, OpenAI and fal do not: no placeholder."""
    async with FakeReplicate() as rep:
        providers = {
            "replicate": ProviderSettings(
                name="replicate", kind="replicate", api_key=Secret("r8_test"),
                base_url=rep.base_url, timeout_seconds=2,
            )
        }  # fmt: skip
        server = TestServer(
            create_app(replace(settings, providers=providers), clock=clock), host="127.0.0.1"
        )
        await server.start_server()
        gw = Gateway(server, CountingProvider(), clock)
        yield gw
        await gw.close()


async def models(gw: Gateway) -> dict[str, dict[str, object]]:
    page = await gw.client().models.list()
    return {m.id: m.model_dump() for m in page.data}


async def health_rows(gw: Gateway) -> dict[str, str]:
    async with aiohttp.ClientSession() as http, http.get(gw.root + "/dashboard") as got:
        assert got.status == 200
        html = await got.text()
    table = html[html.index("<table id='health'>") :]
    table = table[: table.index("</table>")]
    rows = {}
    for row in table.split("<tr>")[2:]:
        cells = [c.split(">", 1)[1].split("<", 1)[0] for c in row.split("<td")[1:]]
        rows[cells[0]] = cells[2]
    return rows


async def test_a_model_whose_provider_has_no_credentials_is_not_available(replicate_only, clock):
    listed = await models(replicate_only)
    assert {m["created"] for m in listed.values()} == {int(clock())}  # when it started
    mini = listed["gpt-image-1-mini"]
    assert mini["available"] is False and mini["provider_configured"] is False
    flux = listed["flux-schnell"]
    assert flux["available"] is True and flux["served_by"] == "replicate"
    assert "openai" in mini["unavailable_reason"] and "credentials" in mini["unavailable_reason"]
    assert listed["fal-flux-schnell"]["available"] is False
    assert listed["dall-e-3"]["available"] is False  # its successor is an OpenAI model
    assert listed["auto"]["available"] is True and listed["auto"]["served_by"] == "router"
    assert listed["midjourney-v6.1"]["available"] is False

    health = await health_rows(replicate_only)
    assert health["flux-schnell"] == "closed"
    assert health["gpt-image-1-mini"] == "not configured"
    assert health["fal-flux-schnell"] == "not configured"


async def test_offline_every_model_is_drawn_by_the_placeholder(gateway, clock):
    health = await health_rows(gateway)
    assert health and set(health.values()) == {"not configured (the placeholder draws it)"}
    listed = await models(gateway)
    mini = listed["gpt-image-1-mini"]
    assert mini["available"] is True and mini["served_by"] == "placeholder"
    assert mini["provider_configured"] is False
    assert mini["created"] == int(clock()) > 0
