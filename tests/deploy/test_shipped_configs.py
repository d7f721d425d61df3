"""The shipped configs (deploy/config.toml and the ConfigMap's), loaded with the gateway's
own loader and served as real processes: the admin API stays closed, Prometheus scrapes
with the metrics key, and a missing key stops the gateway."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import load_settings
from tests.deploy.deploy_files import DEPLOY, compose, container, k8s_docs
from tests.deploy.live_gateway import (
    ADMIN_KEY,
    KEYS,
    METRICS_KEY,
    gateway_env,
    http,
    running_gateway,
    scrape,
)
from tests.deploy.metric_names import KNOWN_METRICS


def configmap_toml(tmp_path: Path) -> Path:
    path = tmp_path / "configmap.toml"
    path.write_text(k8s_docs()["ConfigMap"]["data"]["config.toml"])
    return path


def test_container_configs_load_with_the_gateway_loader(tmp_path):
    environ = {
        "OPENAI_API_KEY": "",
        "REPLICATE_API_TOKEN": "",
        "IMAGEGATE_ADMIN_KEY": "x" * 32,
        "IMAGEGATE_METRICS_KEY": "m" * 32,
    }
    for path in (DEPLOY / "config.toml", configmap_toml(tmp_path)):
        settings = load_settings(path, environ)
        assert settings.data_dir == Path("/data"), path
        assert settings.logging.format == "json", path
        assert settings.server.port == 8080, path


def test_k8s_cache_bound_fits_its_volume(tmp_path):
    environ = {"IMAGEGATE_ADMIN_KEY": "x" * 32, "IMAGEGATE_METRICS_KEY": "m" * 32}
    settings = load_settings(configmap_toml(tmp_path), environ)
    storage = k8s_docs()["PersistentVolumeClaim"]["spec"]["resources"]["requests"]["storage"]
    size = int(storage.removesuffix("Gi")) * 2**30
    assert settings.cache.max_bytes is not None
    assert settings.cache.max_bytes <= 0.85 * size


SHIPPED_CONFIGS = ["config.toml", "k8s/configmap.yaml"]
LOCAL_FREE_PORT = ("--host", "127.0.0.1", "--port", "0")


def shipped_config(which: str, tmp_path: Path) -> Path:
    return DEPLOY / which if which == "config.toml" else configmap_toml(tmp_path)


@pytest.mark.parametrize("which", SHIPPED_CONFIGS)
def test_shipped_configs_keep_the_admin_api_closed(tmp_path, which):
    """Served with IMAGEGATE_ADMIN_KEY set, as compose and the Deployment do: the admin routes
    answer the admin key only, and nobody else can issue a key."""
    args = ["serve", "--config", str(shipped_config(which, tmp_path)), *LOCAL_FREE_PORT]
    env = gateway_env(tmp_path, **KEYS)
    with running_gateway(args, env, tmp_path) as base:
        keys = f"{base}/admin/keys"
        status, body = http("GET", keys)
        assert status == 401 and body["error"]["type"] == "invalid_request_error"
        assert http("GET", keys, token="not-the-admin-key-0123456789")[0] == 401
        assert http("POST", keys, body={"name": "intruder"})[0] == 401
        assert http("GET", f"{base}/admin/spend?by=key")[0] == 401
        assert http("GET", keys, token=ADMIN_KEY) == (200, {"object": "list", "data": []})
        status, created = http("POST", keys, token=ADMIN_KEY, body={"name": "web-app"})
        assert status == 201 and created["key"]
        assert http("GET", f"{base}/readyz")[0] == 200


@pytest.mark.parametrize("which", SHIPPED_CONFIGS)
def test_shipped_configs_let_prometheus_scrape_with_the_metrics_key(tmp_path, which):
    """Served as compose and the Deployment serve them: /metrics answers the metrics key (what
    Prometheus sends) before and after the first API key is issued, and nobody without it.
    Its families are KNOWN_METRICS, no more and no fewer."""
    args = ["serve", "--config", str(shipped_config(which, tmp_path)), *LOCAL_FREE_PORT]
    with running_gateway(args, gateway_env(tmp_path, **KEYS), tmp_path) as base:
        assert scrape(base, None)[0] == 401
        assert scrape(base, "not-the-metrics-key-0123456789")[0] == 401
        status, text = scrape(base, METRICS_KEY)
        assert status == 200
        assert http("POST", f"{base}/admin/keys", token=ADMIN_KEY, body={"name": "app"})[0] == 201
        assert scrape(base, None)[0] == 401
        assert scrape(base, METRICS_KEY)[0] == 200  # a key issued does not stop scraping
        assert scrape(base, ADMIN_KEY)[0] == 200
    families = dict(re.findall(r"^# TYPE (imagegate_\w+) (\w+)$", text, re.M))
    exported = {
        (f"{name}_total" if kind == "counter" and not name.endswith("_total") else name): kind
        for name, kind in families.items()
        if not name.endswith("_created")  # prometheus-client's creation times, not metrics
    }
    assert exported == KNOWN_METRICS


@pytest.mark.parametrize("which", SHIPPED_CONFIGS)
@pytest.mark.parametrize("variable", ["IMAGEGATE_ADMIN_KEY", "IMAGEGATE_METRICS_KEY"])
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_shipped_configs_refuse_to_start_without_a_key(tmp_path, which, variable, value):
    """A container listens on every interface: with no admin key its admin API would be open,
    and with no metrics key Prometheus could not scrape once an API key exists; so the shipped
    configs stop the gateway with a message naming the variable instead."""
    extra = {k: v for k, v in KEYS.items() if k != variable}
    if value is not None:
        extra[variable] = value
    config = str(shipped_config(which, tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", config, *LOCAL_FREE_PORT],
        capture_output=True,
        text=True,
        env=gateway_env(tmp_path, **extra),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "config error" in done.stderr and f"${variable} is required" in done.stderr
    assert not (tmp_path / "data").exists()  # stopped before opening any store


@pytest.mark.parametrize("which", SHIPPED_CONFIGS)
def test_shipped_configs_read_every_credential_from_the_environment(tmp_path, which):
    environ = {
        **KEYS,
        "OPENAI_API_KEY": "sk-deploy-test",
        "REPLICATE_API_TOKEN": "r8_deploy-test",
        "FAL_KEY": "fal-id:fal-secret",
    }
    settings = load_settings(shipped_config(which, tmp_path), environ)
    assert settings.cost.admin_key == ADMIN_KEY
    assert settings.server.metrics_key.reveal() == METRICS_KEY
    providers = {name: p.api_key.reveal() for name, p in settings.providers.items()}
    assert providers["openai"] == environ["OPENAI_API_KEY"]
    assert providers["replicate"] == environ["REPLICATE_API_TOKEN"]
    assert providers["fal"] == environ["FAL_KEY"]


def test_compose_and_k8s_pass_every_credential_the_configs_read():
    read = {*KEYS, "OPENAI_API_KEY", "REPLICATE_API_TOKEN", "FAL_KEY"}
    assert read <= set(compose()["services"]["gateway"]["environment"])
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "valueFrom" in e
    }
    assert set(refs) == read
    for name in KEYS:
        assert "optional" not in refs[name], name  # no Secret key, no pod
    assert all(refs[name].get("optional") is True for name in read - set(KEYS))
