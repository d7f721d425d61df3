"""The README's keys section, step by step, as a user runs it: `imagegate serve` with the
shipped config.toml, `imagegate keys ...` and the openai SDK, all as real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import httpx
import openai
import pytest

from proxy.app_keys import AUTH

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config.toml"
ADMIN = "readme-admin-key-0123456789"
URL = re.compile(r"(http://\S+/v1)")


class Serve:
    """`imagegate serve --config config.toml --port 0`, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(SHIPPED), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        line = self.proc.stdout.readline()
        match = URL.search(line)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"no base URL printed: {line!r} {self.proc.stderr.read()}")
        self.base_url = match[1]
        self.root = self.base_url.removesuffix("/v1")

    def client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)

    def stop(self) -> list[dict[str, object]]:
        """Stops the server; its JSON log lines."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=20) == 0
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert "Traceback" not in err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_", "FAL_"))
    }
    return {**clean, "PYTHONPATH": str(ROOT), "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}


def keys(gw: Serve, env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "keys", "--base-url", gw.root, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def generate(client: openai.OpenAI) -> str:
    raw = client.images.with_raw_response.generate(model="auto", prompt="a paper crane")
    return raw.headers["x-cache"]


def events(lines: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [line for line in lines if line.get("event") == name]


def test_no_admin_key_no_first_key_so_nobody_is_locked_out(env, tmp_path):
    gw = Serve(env, tmp_path)  # command 1 of the quickstart: no IMAGEGATE_ADMIN_KEY
    try:
        code, out = keys(gw, {**env, "IMAGEGATE_ADMIN_KEY": ADMIN}, "create", "web-app")
        assert code == 1
        assert "409" in out and "IMAGEGATE_ADMIN_KEY" in out and "imagegate serve" in out
        code, out = keys(gw, env, "list")
        assert code == 0 and "web-app" not in out
        with gw.client("unused-when-open") as client:  # still open: nothing was locked
            assert generate(client) == "MISS"
        assert httpx.get(gw.root + "/dashboard").status_code == 200
    finally:
        logs = gw.stop()
    assert events(logs, "server.started")[0]["open"] is True
    assert events(logs, "auth.open")


def test_the_readme_keys_section_in_order(env, tmp_path):
    admin_env = {**env, "IMAGEGATE_ADMIN_KEY": ADMIN}
    gw = Serve(admin_env, tmp_path)  # 1. start the gateway with an admin key
    try:
        code, out = keys(  # 2. issue a key
            gw, admin_env, "create", "web-app", "--team", "growth", "--budget-usd", "25",
            "--window", "day", "--requests-per-minute", "120",
        )  # fmt: skip
        assert code == 0, out
        secret = out.strip().splitlines()[-1]
        assert secret.startswith("igk-")
        code, out = keys(gw, admin_env, "list")
        assert code == 0 and "web-app" in out and "growth" in out and secret not in out
        with gw.client(secret) as client:  # 3. clients send it as their api_key
            assert generate(client) == "MISS"
        with gw.client("unused-when-open") as client, pytest.raises(openai.AuthenticationError):
            generate(client)
        code, out = keys(gw, admin_env, "set-budget", "web-app", "50", "--window", "month")
        assert code == 0 and '"budget_usd": "50"' in out
        code, _ = keys(gw, admin_env, "revoke", "web-app")
        assert code == 0
        with gw.client(secret) as client, pytest.raises(openai.AuthenticationError):
            generate(client)
        code, out = keys(gw, admin_env, "list")  # the admin is never locked out
        assert code == 0 and "revoked" in out
        assert httpx.get(gw.root + "/dashboard", auth=("admin", ADMIN)).status_code == 200
    finally:
        gw.stop()

    restarted = Serve(admin_env, tmp_path)
    logs = restarted.stop()
    started = events(logs, "server.started")[0]
    assert started["open"] is False and started["admin_key"] is True
    assert started["keys"] == "0 from config, 0 issued, 1 revoked"
    assert not events(logs, "auth.open")


def test_restart_after_issuing_a_key_says_the_gateway_is_closed(env, tmp_path):
    admin_env = {**env, "IMAGEGATE_ADMIN_KEY": ADMIN}
    gw = Serve(admin_env, tmp_path)
    try:
        code, out = keys(gw, admin_env, "create", "web-app")
        assert code == 0, out
    finally:
        gw.stop()

    restarted = Serve(env, tmp_path)  # the variable forgotten this time
    try:
        with (
            restarted.client("unused-when-open") as client,
            pytest.raises(openai.AuthenticationError),
        ):
            generate(client)
        code, out = keys(restarted, admin_env, "list")
        assert code == 1 and "401" in out and "IMAGEGATE_ADMIN_KEY" in out
    finally:
        logs = restarted.stop()
    started = events(logs, "server.started")[0]
    assert started["open"] is False
    assert started["keys"] == "0 from config, 1 issued, 0 revoked"
    assert not events(logs, "auth.open")
    (warning,) = events(logs, "auth.no_admin_key")
    assert "IMAGEGATE_ADMIN_KEY" in str(warning["detail"])


async def test_the_refusal_is_an_openai_envelope_and_creates_nothing(gateway):
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.root + "/admin/keys", json={"name": "web-app"}) as got:
            assert got.status == 409
            error = (await got.json())["error"]
        async with http.get(gateway.root + "/admin/keys") as listed:
            assert (await listed.json())["data"] == []
    assert error["code"] == "admin_key_required" and error["type"] == "invalid_request_error"
    assert "IMAGEGATE_ADMIN_KEY" in error["message"]
    assert await gateway.app[AUTH].keys_exist() is False
