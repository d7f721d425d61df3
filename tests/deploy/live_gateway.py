"""A gateway served as a process from a shipped config, and requests to it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_files import ROOT

ADMIN_KEY = "deploy-test-admin-key-0123456789abcdef"
METRICS_KEY = "deploy-test-metrics-key-0123456789abcdef"
KEYS = {"IMAGEGATE_ADMIN_KEY": ADMIN_KEY, "IMAGEGATE_METRICS_KEY": METRICS_KEY}


def gateway_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any imagegate or provider setting, plus `extra`."""
    prefixes = ("IMAGEGATE_", "OPENAI_", "REPLICATE_", "FAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"PYTHONPATH": str(ROOT), "IMAGEGATE_DATA_DIR": str(tmp_path / "data")} | extra


@contextmanager
def running_gateway(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[str]:
    """`python -m proxy <args>` (which must bind 127.0.0.1:0) until the block ends: its base
    URL (http://127.0.0.1:<port>, without /v1)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # a few log lines: far from filling the pipe
        text=True,
        env=env,
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline())
        if match is None:
            proc.kill()
            pytest.fail(f"the gateway printed no base URL:\n{proc.stderr.read()[-3000:]}")
        yield match[1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def http(
    method: str, url: str, *, token: str | None = None, body: object = None
) -> tuple[int, Any]:
    """(status, parsed JSON body) of one request; HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (our gateway)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def scrape(base: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"{base}/metrics")  # noqa: S310 (our gateway)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
