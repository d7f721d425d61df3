"""`imagegate keys` against a real gateway, as an operator would use it."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import openai
import pytest

from proxy.config_cost import parse_cost
from tests.conftest import start_gateway

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "cli-admin-0123456789abc"


async def keys(gw, *args: str, admin: str = ADMIN) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGEGATE_ADMIN_KEY": admin}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "keys",
        "--base-url",
        gw.base_url,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def gw(settings, provider, clock):
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}}))
    gateway = await start_gateway(settings, provider, clock)
    yield gateway
    await gateway.close()


async def test_create_use_list_budget_and_revoke_a_key(gw):
    code, out, _ = await keys(
        gw,
        "create",
        "web-app",
        "--team",
        "growth",
        "--budget-usd",
        "25",
        "--requests-per-minute",
        "120",
        "--model",
        "auto",
        "--model",
        "gpt-image-1-mini",
    )
    assert code == 0
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("igk-")
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=secret, max_retries=0)
    gw.clients.append(client)
    await client.images.generate(model="gpt-image-1-mini", prompt="a kite", size="1024x1024")

    code, out, _ = await keys(gw, "list")
    assert code == 0 and "web-app" in out and "growth" in out and secret not in out
    code, out, _ = await keys(gw, "set-budget", "web-app", "50", "--window", "month")
    assert code == 0 and '"budget_usd": "50"' in out
    code, _, _ = await keys(gw, "revoke", "web-app")
    assert code == 0
    with pytest.raises(openai.AuthenticationError):
        await client.images.generate(model="gpt-image-1-mini", prompt="a kite")


async def test_wrong_admin_key_and_unknown_key_say_what_is_wrong(gw):
    code, out, _ = await keys(gw, "list", admin="not-the-admin-key")
    assert code == 1 and "401" in out and "admin key" in out
    code, out, _ = await keys(gw, "revoke", "nobody")
    assert code == 1 and "404" in out
