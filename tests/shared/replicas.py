"""Three `imagegate serve` processes on one shared config: what the multi-replica suite
drives with the openai SDK.

Each replica is a real process on a free port with a data directory of its own (nothing is
shared through the disk: only Redis, PostgreSQL and S3). The upstream is a `FakeReplicate`
on this test's event loop; it counts the predictions made (`len(fake.predictions)`).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openai

__all__ = ["ADMIN", "SECRET", "Replica", "start_replicas", "stop_replicas"]

ROOT = Path(__file__).resolve().parents[2]
URL = re.compile(r"(http://\S+/v1)")
SECRET = "sk-shared-0123456789abcdef"
ADMIN = "admin-shared-0123456789abcdef"


@dataclass
class Replica:
    """One `imagegate serve`; its log (stderr) is `<tmp_path>/<name>.log`."""

    name: str
    proc: subprocess.Popen[str]
    base_url: str = ""
    clients: dict[str, openai.AsyncOpenAI] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def client(self, api_key: str = SECRET) -> openai.AsyncOpenAI:
        """One SDK client per key (its connection pool reused), made on first use."""
        client = self.clients.get(api_key)
        if client is None:
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)
            self.clients[api_key] = client
        return client

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


def _env(tmp_path: Path, name: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_", "AWS_"))
    }
    return env | {"PYTHONPATH": str(ROOT), "IMAGEGATE_DATA_DIR": str(tmp_path / name)}


async def _ready(replica: Replica) -> None:
    stdout = replica.proc.stdout
    assert stdout is not None
    line = await asyncio.to_thread(stdout.readline)
    match = URL.search(line)
    if match is None:
        replica.proc.kill()
        raise AssertionError(f"replica {replica.name} printed no base URL: {line!r}")
    replica.base_url = match[1]


def _spawn(config: Path, tmp_path: Path, name: str, workers: int = 1) -> Replica:
    command = [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    with (tmp_path / f"{name}.log").open("w") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(tmp_path, name),
            cwd=tmp_path,
        )  # fmt: skip
    return Replica(name, proc)


async def start_replicas(
    config: Path, tmp_path: Path, count: int = 3, workers: int = 1
) -> list[Replica]:
    """`count` replicas of `config` (each `--workers workers`), started together (their
    migrations race, as in a rollout), each accepting requests when this returns."""
    replicas = [_spawn(config, tmp_path, name, workers) for name in "ABCDEFG"[:count]]
    try:
        await asyncio.gather(*(_ready(r) for r in replicas))
    except BaseException:
        await stop_replicas(replicas)
        raise
    return replicas


async def stop_replicas(replicas: Sequence[Replica]) -> None:
    for replica in replicas:
        for client in replica.clients.values():
            await client.close()
        if replica.proc.poll() is None:
            replica.proc.send_signal(signal.SIGTERM)
    for replica in replicas:
        try:
            await asyncio.to_thread(replica.proc.wait, 20)
        except subprocess.TimeoutExpired:
            replica.proc.kill()
            await asyncio.to_thread(replica.proc.wait)
        if replica.proc.stdout is not None:
            replica.proc.stdout.close()
