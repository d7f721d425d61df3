"""The Dockerfile: its stages, user, volume, command and healthcheck, its build context,
and its command and healthcheck run against a real gateway."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.deploy.deploy_files import (
    DEPLOY,
    ROOT,
    dockerfile,
    healthcheck_command,
    image_env,
    image_uid,
    instructions,
)
from tests.deploy.live_gateway import KEYS, gateway_env, running_gateway


def test_dockerfile_builds_in_stages_from_python_311_slim():
    args = dict(a.partition("=")[::2] for i, a in dockerfile() if i == "ARG" and "=" in a)
    stages = [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], a) for a in instructions("FROM")]
    assert len(stages) >= 2
    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages)
    assert any(a.startswith("--from=") for a in instructions("COPY", "final"))


def test_dockerfile_runs_non_root_with_a_data_volume_and_a_healthcheck():
    assert image_uid() != 0
    assert instructions("VOLUME", "final") == ["/data"]
    assert instructions("EXPOSE", "final") == ["8080"]
    env = image_env()
    assert env["IMAGEGATE_DATA_DIR"] == "/data"
    assert env["IMAGEGATE_CONFIG"] == "/etc/imagegate/config.toml"
    [cmd] = instructions("CMD", "final")
    # every interface: inside a container, 127.0.0.1 is unreachable from outside
    everywhere = "0.0.0.0"  # noqa: S104
    assert json.loads(cmd) == ["imagegate", "serve", "--host", everywhere, "--port", "8080"]
    check = " ".join(healthcheck_command())
    assert "urllib" in check and "/healthz" in check and "curl" not in check
    order = [i for i, _ in dockerfile()]
    assert order.index("USER") < order.index("CMD")


def test_docker_build_context_admits_every_copied_file():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for args in instructions("COPY"):
        words = args.split()
        if any(w.startswith("--from=") for w in words):
            continue  # from a build stage, not from the context
        for source in [w for w in words if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in admitted, f"{source} is ignored by the build context"


def test_image_command_and_healthcheck_work_against_a_real_gateway(tmp_path):
    """The CMD with the baked config starts a gateway; the HEALTHCHECK command passes on it."""
    [cmd] = instructions("CMD", "final")
    args = json.loads(cmd)[1:]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = "0"
    env = gateway_env(tmp_path, IMAGEGATE_CONFIG=str(DEPLOY / "config.toml"), **KEYS)
    with running_gateway(args, env, tmp_path) as base:
        port = base.rsplit(":", 1)[1]
        probe = [a.replace(":8080/", f":{port}/") for a in healthcheck_command()]
        assert probe[0] == "python"
        done = subprocess.run([sys.executable, *probe[1:]], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
