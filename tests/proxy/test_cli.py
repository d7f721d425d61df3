"""`imagegate serve` as a user runs it: a real process, the openai SDK, kill -9, restart."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from proxy.serving import _freeze_startup_objects, run_server

URL = re.compile(r"(http://\S+/v1)")


class Server:
    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", *args],
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

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="sk-local", max_retries=0)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
    }
    return {**clean, "PYTHONPATH": str(root), "IMAGEGATE_DATA_DIR": str(tmp_path / "data")}


def ask(client: openai.OpenAI):
    raw = client.images.with_raw_response.generate(
        model="gpt-image-1-mini", prompt="a paper crane", size="1024x1024"
    )
    return raw.headers["x-cache"], raw.parse().data[0].b64_json


def test_serve_survives_kill_9_and_restarts_with_its_cache(env, tmp_path):
    first = Server(["serve", "--port", "0"], env, tmp_path)
    with first.client() as client:
        outcome, image = ask(client)
        assert outcome == "MISS"
        assert ask(client) == ("HIT", image)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = Server(["serve", "--port", "0"], env, tmp_path)
    with second.client() as client:
        assert ask(client) == ("HIT", image)
    assert second.stop(signal.SIGTERM) == 0
    assert "Traceback" not in second.stderr


def test_serve_reads_config_and_interpolates_env(env, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nhost = "${GW_HOST}"\n[defaults]\nmodel = "dall-e-2"\n')
    server = Server(
        ["serve", "--config", str(config), "--port", "0"], {**env, "GW_HOST": "127.0.0.1"}, tmp_path
    )
    with server.client() as client:
        result = client.images.generate(prompt="a cat", size="256x256")
        assert result.data[0].url.endswith(".png")  # dall-e-2 answers with a URL by default
    assert server.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server\n", "not valid TOML"),
        ("[cache]\nmax_bytes = -5\n", "cache.max_bytes"),
        ("[cache]\nmemory_mb = -1\n", "cache.memory_mb"),
        ("[server]\nevent_loop = 'fast'\n", "server.event_loop"),
        ("[logging]\nflush_ms = -1\n", "logging.flush_ms"),
        ("[cache]\nmemory_mb = 1.5\n", "cache.memory_mb"),
        ("[providers.openai]\napi_kee = 'x'\n", "providers.openai.api_kee"),
        ("[nonsense]\n", "nonsense"),
    ],
)
def test_config_errors_name_the_path_and_exit_non_zero(env, tmp_path, text, fragment):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 2
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_missing_config_file_is_an_error(env, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", "nope.toml"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 2 and "file not found" in done.stderr


def test_workers_share_one_port_and_the_stores(env, tmp_path):
    server = Server(["serve", "--port", "0", "--workers", "2"], env, tmp_path)
    with server.client() as client:
        outcome, image = ask(client)
        seen = {ask(client) for _ in range(20)}  # spread over both workers
        assert outcome == "MISS" and seen == {("HIT", image)}
    assert server.stop(signal.SIGTERM) == 0
    assert server.stderr.count('"server.stopping"') == 2


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_server_runs_on_the_event_loop_asked_for(choice, expected):
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run_server(main(), choice)
    assert seen == [expected]


def test_a_port_in_use_says_what_to_do(env, tmp_path):
    """A newcomer starts the gateway again (the README's keys section) while the first one
    still runs: the error says why and what to do, not only the socket's complaint."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--port", str(port)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "stop it, or start this one with --port PORT" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_start_up_objects_are_frozen_out_of_the_collectors_sight():
    """After start-up the heap (modules, catalog, SDK models) is frozen: a full collection
    walks only what requests made since, not a pause of tens of ms (bench/, --gc-probe)."""
    gc.unfreeze()
    try:
        _freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
