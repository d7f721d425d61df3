"""The dashboard as a person sees it: headless Chromium renders the page from a real gateway."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import openai
import pytest

from proxy.app_keys import ACCOUNTS
from proxy.config_cost import parse_cost
from tests.conftest import CountingProvider, PricedProvider, start_gateway

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN = "dash-admin-0123456789"


async def chromium(url: str, tmp: Path, *, screenshot: Path | None = None) -> str:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        "--window-size=1280,1600",
    ]
    args.append(f"--screenshot={screenshot}" if screenshot else "--dump-dom")
    proc = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return out.decode("utf-8", "replace")


async def traffic(gw) -> None:
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    gw.clients.append(client)
    for prompt in ("a red kite", "a blue kite", "a <script>alert(1)</script> kite"):
        for _ in range(2):  # a miss, then a hit
            await client.images.generate(model="flux-schnell", prompt=prompt, size="256x256")
    await gw.app[ACCOUNTS].flush_hits()


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
async def test_dashboard_in_headless_chromium(settings, clock, tmp_path):
    clock.now = time.time()
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        await traffic(gw)
        dom = await chromium(gw.root + "/dashboard", tmp_path)
        ARTIFACTS.mkdir(exist_ok=True)
        await chromium(gw.root + "/dashboard", tmp_path, screenshot=ARTIFACTS / "dashboard.png")
    finally:
        await gw.close()
    ledger = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    spent, hits, rows = ledger.execute(
        "SELECT SUM(cost_micros), SUM((cache IN ('HIT','COALESCED')) * requests), SUM(requests) "
        "FROM ledger"
    ).fetchone()
    assert spent == 9_000  # three flux-schnell images at $0.003
    # The chart is drawn: 30 days of bars; today's spend is the ledger's, the rest are zero.
    assert re.search(r"<svg id=\"spend-chart\" data-days=\"30\"", dom)
    bars = re.findall(r'class="bar spend"[^>]*data-usd="([^"]+)"', dom)
    assert bars == ["0"] * 29 + ["0.009"]
    assert f"{hits / rows:.1%}" in dom  # the hit-ratio card
    # The gallery: every image loaded, prompts escaped (the script tag is shown, not run).
    assert 'data-images-loaded="3"' in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000


async def test_dashboard_needs_the_admin_key_when_one_is_set(settings, clock):
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}}))
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.root + "/dashboard") as denied:
                assert denied.status == 401
                assert denied.headers["WWW-Authenticate"].startswith("Basic")
            basic = base64.b64encode(f"admin:{ADMIN}".encode()).decode()
            async with http.get(
                gw.root + "/dashboard", headers={"Authorization": f"Basic {basic}"}
            ) as ok:
                assert ok.status == 200
                page = await ok.text()
                assert "Spend by model" in page and ADMIN not in page
    finally:
        await gw.close()


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
async def test_nothing_spent_draws_a_zero_axis_in_headless_chromium(settings, clock, tmp_path):
    """An offline gateway (the placeholder provider, $0 a image): the chart's axis reads $0
    to $1 in round steps and nothing says $0.000001."""
    clock.now = time.time()
    gw = await start_gateway(settings, CountingProvider(), clock)
    try:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        gw.clients.append(client)
        await client.images.generate(model="dall-e-2", prompt="a kite", size="256x256")
        await gw.app[ACCOUNTS].flush_hits()
        dom = await chromium(gw.root + "/dashboard", tmp_path)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-zero.png"
        await chromium(gw.root + "/dashboard", tmp_path, screenshot=shot)
    finally:
        await gw.close()
    assert re.search(r"<svg id=\"spend-chart\" data-days=\"30\"", dom)
    assert re.findall(r'class="bar spend"[^>]*data-usd="([^"]+)"', dom) == ["0"] * 30
    assert re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', dom) == [
        "$0", "$0.25", "$0.5", "$0.75", "$1",
    ]  # fmt: skip
    assert "highest day $0 " in dom
    assert "0.000001" not in dom
    assert shot.stat().st_size > 10_000
