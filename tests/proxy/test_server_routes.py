"""405 with Allow, who may read /v1/models and /metrics, and the event-loop lag histogram."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp
import pytest

from proxy.app_keys import METRICS
from proxy.config import ConfigError, Secret, load_settings
from proxy.config_cost import parse_cost
from tests.conftest import start_gateway

API_KEY = "sk-routes-0123456789abc"
ADMIN = "admin-0123456789abcdef"
SCRAPE = "scrape-0123456789abcdef"


def with_keys(settings, *, admin: str = "", metrics_key: str = ""):
    cost = {"keys": [{"name": "app", "key": API_KEY}], "auth": {"admin_key": admin}}
    return replace(
        settings,
        server=replace(settings.server, metrics_key=Secret(metrics_key)),
        cost=parse_cost(cost),
    )


async def status_of(url: str, method: str = "GET", token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as got:
        await got.read()
        return got.status


async def test_405_names_the_allowed_methods_in_an_allow_header(gateway):
    async with aiohttp.ClientSession() as http:
        async with http.request("TRACE", gateway.root + "/v1/models") as got:
            assert got.status == 405
            assert {m.strip() for m in got.headers["Allow"].split(",")} == {"GET", "HEAD"}
            assert (await got.json())["error"]["code"] == "method_not_allowed"
        async with http.put(gateway.base_url + "/images/generations") as got:
            assert got.status == 405
            assert got.headers["Allow"] == "POST"


async def test_an_open_gateway_serves_models_and_metrics_to_anyone(gateway):
    assert await status_of(gateway.base_url + "/models") == 200
    assert await status_of(gateway.root + "/metrics") == 200


async def test_models_need_an_api_key_once_keys_exist(settings, provider, clock):
    gw = await start_gateway(with_keys(settings, admin=ADMIN), provider, clock)
    try:
        models = gw.base_url + "/models"
        assert await status_of(models) == 401
        assert await status_of(models, token="sk-wrong-0123456789abc") == 401
        assert await status_of(models, token=API_KEY) == 200
        assert await status_of(models, token=ADMIN) == 200
        assert await status_of(gw.root + "/healthz") == 200  # probes send no credentials
    finally:
        await gw.close()


async def test_metrics_need_the_metrics_key_or_the_admin_key_once_keys_exist(
    settings, provider, clock
):
    gw = await start_gateway(with_keys(settings, admin=ADMIN), provider, clock)
    try:
        url = gw.root + "/metrics"
        assert await status_of(url) == 401
        assert await status_of(url, token=API_KEY) == 401  # an API key is not enough
        assert await status_of(url, token=ADMIN) == 200
    finally:
        await gw.close()
    gw = await start_gateway(with_keys(settings, metrics_key=SCRAPE), provider, clock)
    try:
        url = gw.root + "/metrics"
        assert await status_of(url) == 401
        assert await status_of(url, token=SCRAPE + "x") == 401
        assert await status_of(url, token=SCRAPE) == 200
    finally:
        await gw.close()


async def test_a_metrics_key_closes_metrics_even_on_an_open_gateway(settings, provider, clock):
    keyed = replace(settings, server=replace(settings.server, metrics_key=Secret(SCRAPE)))
    gw = await start_gateway(keyed, provider, clock)
    try:
        assert await status_of(gw.root + "/metrics") == 401
        assert await status_of(gw.root + "/metrics", token=SCRAPE) == 200
        assert await status_of(gw.base_url + "/models") == 200  # no keys: the gateway is open
    finally:
        await gw.close()


async def test_a_blocked_event_loop_shows_in_the_lag_histogram(settings, provider, clock):
    blocked = 0.3
    probing = replace(settings, server=replace(settings.server, loop_lag_interval_seconds=0.01))
    gw = await start_gateway(probing, provider, clock)
    try:
        registry = gw.app[METRICS].registry
        for _ in range(1000):  # the probe has run once (bounded: 10 s)
            if registry.get_sample_value("imagegate_event_loop_lag_seconds_count"):
                break
            await asyncio.sleep(0.01)
        time.sleep(blocked)  # noqa: ASYNC251 - blocks the loop on purpose: what the probe sees
        late = 0.0
        for _ in range(1000):
            if late:
                break
            await asyncio.sleep(0.01)  # the probe's timer fires once the loop runs again
            count = registry.get_sample_value("imagegate_event_loop_lag_seconds_count")
            under = registry.get_sample_value(
                "imagegate_event_loop_lag_seconds_bucket", {"le": "0.25"}
            )
            late = count - under  # samples later than 0.25 s
        assert late == 1
        total = registry.get_sample_value("imagegate_event_loop_lag_seconds_sum")
        assert total >= blocked - 0.01 - 0.001  # one late timer: the block less its own wait
    finally:
        await gw.close()


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ("header_timeout_seconds = 0", "server.header_timeout_seconds"),
        ("keepalive_timeout_seconds = -1", "server.keepalive_timeout_seconds"),
        ('body_timeout_seconds = "60"', "server.body_timeout_seconds"),
        ('metrics_key = "short"', "server.metrics_key"),
        ("loop_lag_interval_seconds = 0.0001", "server.loop_lag_interval_seconds"),
    ],
)
def test_server_settings_that_cannot_work_name_their_key(tmp_path, toml, path):
    config = tmp_path / "c.toml"
    config.write_text(f"[server]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert info.value.path == path and "unknown key" not in str(info.value)


def test_an_unset_metrics_key_variable_leaves_metrics_to_the_admin_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[server]\nmetrics_key = "${IMAGEGATE_METRICS_KEY}"\n')
    assert not load_settings(config, environ={}).server.metrics_key
    key = "m" * 20
    got = load_settings(config, environ={"IMAGEGATE_METRICS_KEY": key}).server.metrics_key
    assert got == Secret(key) and key not in repr(got)
