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
    """`imagegate keys ARGS --base-url URL`: the gateway named last, as people type it."""
    return await imagegate("keys", *args, "--base-url", gw.base_url, admin=admin)


async def imagegate(*args: str, admin: str = ADMIN) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMAGEGATE_ADMIN_KEY": admin}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
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
    code, out, err = await keys(gw, "list", admin="not-the-admin-key")
    assert code == 1 and "401" in err and "admin key" in err and not out
    assert "Bearer <[auth] admin_key>" in " ".join(err.split())
    code, out, err = await keys(gw, "revoke", "nobody")
    assert code == 1 and "404" in err and not out


async def test_the_gateway_options_go_before_or_after_the_action(gw):
    code, out, err = await imagegate("keys", "--base-url", gw.base_url, "list")
    assert code == 0 and "API keys" in out, err
    code, out, err = await imagegate("keys", "list", "--base-url", gw.base_url)
    assert code == 0 and "API keys" in out, err
    code, out, err = await imagegate(
        "keys", "list", "--base-url", gw.base_url, "--admin-key", ADMIN, admin="wrong-one"
    )
    assert code == 0 and "API keys" in out, err


async def test_server_messages_are_printed_whole_on_stderr(settings, provider, clock):
    """The gateway's message names a config table, `[auth]`: rich must not eat it."""
    cost = parse_cost({"keys": [{"name": "app", "key": "sk-app-0123456789abcdef"}]})
    gateway = await start_gateway(replace(settings, cost=cost), provider, clock)  # no admin key
    try:
        code, out, err = await keys(gateway, "list")
    finally:
        await gateway.close()
    assert code == 1 and not out
    assert '[auth] admin_key = "${IMAGEGATE_ADMIN_KEY}"' in " ".join(err.split())


async def test_names_with_brackets_are_shown_as_typed(gw):
    code, out, err = await keys(gw, "create", "web[bold]app", "--team", "[red]growth")
    assert code == 0, err
    assert "Key web[bold]app created" in out
    code, out, err = await keys(gw, "list")
    assert code == 0 and "web[bold]app" in out and "[red]growth" in out, err
