"""Shared mode's configs (compose's and Kubernetes'), loaded with the gateway's own
loader, and the README's walk from embedded to shared mode."""

from __future__ import annotations

import re

import pytest

from proxy.config import ConfigError, load_settings
from tests.deploy.deploy_files import DEPLOY, K8S_SHARED, ROOT, raw_toml
from tests.deploy.live_gateway import ADMIN_KEY, KEYS, METRICS_KEY

SHARED_CONFIGS = [DEPLOY / "config.shared.toml", K8S_SHARED / "config.toml"]


SHARED_ENVIRON = {
    **KEYS,
    "IMAGEGATE_REDIS_URL": "redis://:redis-secret@redis:6379/0",
    "IMAGEGATE_POSTGRES_DSN": "postgresql://imagegate:pg-secret@postgres:5432/imagegate",
    "AWS_ACCESS_KEY_ID": "deploy-test-access-key",
    "AWS_SECRET_ACCESS_KEY": "deploy-test-secret-key",
    "OPENAI_API_KEY": "sk-deploy-test",
}


@pytest.mark.parametrize("path", SHARED_CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shared_configs_load_with_the_gateway_loader(path):
    settings = load_settings(path, SHARED_ENVIRON)
    assert settings.storage.backend == "shared"
    assert settings.redis.url.reveal() == SHARED_ENVIRON["IMAGEGATE_REDIS_URL"]
    assert settings.redis.prefix == "imagegate:"
    assert settings.postgres.dsn.reveal() == SHARED_ENVIRON["IMAGEGATE_POSTGRES_DSN"]
    assert settings.s3.bucket == "imagegate" and settings.s3.prefix == "blobs/"
    assert settings.s3.access_key_id.reveal() == SHARED_ENVIRON["AWS_ACCESS_KEY_ID"]
    assert settings.s3.secret_access_key.reveal() == SHARED_ENVIRON["AWS_SECRET_ACCESS_KEY"]
    assert settings.cost.admin_key == ADMIN_KEY
    assert settings.server.metrics_key.reveal() == METRICS_KEY
    assert settings.server.port == 8080 and settings.logging.format == "json"
    assert settings.providers["openai"].api_key.reveal() == SHARED_ENVIRON["OPENAI_API_KEY"]


@pytest.mark.parametrize("path", SHARED_CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
@pytest.mark.parametrize("variable", ["IMAGEGATE_REDIS_URL", "IMAGEGATE_POSTGRES_DSN"])
def test_shared_configs_refuse_to_load_without_a_backend(path, variable):
    environ = {k: v for k, v in SHARED_ENVIRON.items() if k != variable}
    with pytest.raises(ConfigError, match=rf"\${variable} is required"):
        load_settings(path, environ)


def test_shared_configs_differ_only_in_where_s3_lives():
    """The compose file and the Kubernetes one are the same gateway; compose's S3 is MinIO."""
    compose_config, k8s_config = (raw_toml(path) for path in SHARED_CONFIGS)
    assert compose_config["s3"].pop("endpoint_url") == "http://minio:9000"
    assert k8s_config["s3"].pop("endpoint_url") == ""  # AWS S3 itself
    assert compose_config == k8s_config
    embedded = raw_toml(DEPLOY / "config.toml")
    for section in ("providers", "auth", "logging"):  # only where the stores live changes
        assert compose_config[section] == embedded[section], section


# ---- the README -------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_walks_from_embedded_to_shared_mode():
    section = readme_section("When to switch to shared mode, and how")
    assert "imagegate migrate --from config.toml --to config.shared.toml" in section
    assert "/readyz" in section
    paths = set(re.findall(r"deploy/[\w./-]*[\w/]", section)) - {"deploy/.env"}  # git-ignored
    assert paths
    for path in paths:  # the commands name real files
        assert (ROOT / path).exists(), path
    for link in re.findall(r"\]\(([\w./-]+)\)", section):
        assert (DEPLOY / link).exists(), link
    main = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "deploy/README.md#when-to-switch-to-shared-mode-and-how" in main
