"""compose.yaml (and, where both are checked, compose.shared.yaml): its files exist, the
gateway gets its credentials, volume and config, and the keys are required."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploy_files import (
    COMPOSE_FILES,
    DEPLOY,
    PROMETHEUS,
    ROOT,
    bind_mounts,
    compose,
    image_env,
)
from tests.deploy.live_gateway import KEYS


def test_compose_references_files_that_exist():
    services = compose()["services"]
    assert {"gateway", "prometheus", "grafana"} <= set(services)
    build = services["gateway"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).is_file()
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
    assert bind_mounts(services["prometheus"]) == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS / "prometheus.yml",
        "/etc/prometheus/alerts.yml": PROMETHEUS / "alerts.yml",
    }


def test_compose_gateway_gets_credentials_a_volume_and_its_config():
    gateway = compose()["services"]["gateway"]
    assert {"OPENAI_API_KEY", "REPLICATE_API_TOKEN", "IMAGEGATE_ADMIN_KEY"} <= set(
        gateway["environment"]
    )
    env = image_env()
    named = dict(v.split(":")[::-1] for v in gateway["volumes"] if not v.startswith("."))
    assert named[env["IMAGEGATE_DATA_DIR"]] in compose()["volumes"]
    assert bind_mounts(gateway)[env["IMAGEGATE_CONFIG"]] == DEPLOY / "config.toml"


@pytest.mark.parametrize("which", COMPOSE_FILES)
def test_compose_requires_the_admin_key_and_publishes_on_loopback_by_default(which):
    gateway = compose(which)["services"]["gateway"]
    # ${VAR:?message}: `docker compose up` stops and prints the message when VAR is unset
    for name in KEYS:
        assert gateway["environment"][name].startswith(f"${{{name}:?"), name
    for service in compose(which)["services"].values():
        for port in service.get("ports", []):
            address = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", port).rsplit(":", 2)[0]
            assert address == "127.0.0.1", port
