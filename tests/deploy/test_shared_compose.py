"""Shared mode on one machine: compose.shared.yaml runs replicas of the image behind
HAProxy, on the Redis, PostgreSQL and MinIO it health-checks first."""

from __future__ import annotations

import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_settings
from tests.deploy.deploy_files import (
    DEPLOY,
    METRICS_KEY_FILE,
    PROMETHEUS,
    bind_mounts,
    compose,
    config_variables,
    image_env,
    instructions,
    load_yaml,
    raw_toml,
    run,
)
from tests.deploy.live_gateway import KEYS

SHARED = "compose.shared.yaml"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"
_COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def shared_services() -> dict[str, Any]:
    services: dict[str, Any] = compose(SHARED)["services"]
    return services


def compose_value(text: str) -> str:
    """A compose environment value with every ${VAR...} replaced by <VAR>."""
    return _COMPOSE_VAR.sub(lambda m: f"<{m[1]}>", text)


def served_config(command: list[str], service: dict[str, Any]) -> Path:
    """The host file a compose service's `--config` path is bind-mounted from."""
    return bind_mounts(service)[command[command.index("--config") + 1]]


def test_shared_compose_runs_replicas_of_the_image_behind_the_load_balancer():
    services, port = shared_services(), instructions("EXPOSE", "final")[0]
    gateway = services["gateway"]
    assert gateway["build"] == compose()["services"]["gateway"]["build"]  # the same image
    assert gateway["image"] == compose()["services"]["gateway"]["image"]
    assert gateway["deploy"]["replicas"] >= 2
    assert "ports" not in gateway and "container_name" not in gateway  # replicas cannot share
    command = gateway["command"]
    assert command[:3] == ["imagegate", "serve", "--config"]
    assert command[command.index("--port") + 1] == port
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 (in a container)
    assert served_config(command, gateway) == DEPLOY / "config.shared.toml"
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    assert image_env()["IMAGEGATE_DATA_DIR"] in gateway["tmpfs"]  # nothing kept per replica
    lb = services["lb"]
    assert bind_mounts(lb) == {"/usr/local/etc/haproxy/haproxy.cfg": HAPROXY}
    assert any(p.endswith(f":{haproxy_bind('imagegate')}") for p in lb["ports"])
    assert "gateway" in lb["depends_on"]


def test_shared_compose_references_files_that_exist():
    for name, service in shared_services().items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"
    assert bind_mounts(shared_services()["prometheus"]) == {
        "/etc/prometheus/prometheus.yml": PROMETHEUS / "prometheus.shared.yml",
        "/etc/prometheus/alerts.yml": PROMETHEUS / "alerts.yml",
    }


def test_shared_compose_backends_are_health_checked_before_the_gateway_starts():
    services = shared_services()
    assert services["gateway"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    assert services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["minio-init"]["restart"] == "no"
    for name in ("redis", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
    postgres = services["postgres"]
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    assert check[check.index("-d") + 1] == postgres["environment"]["POSTGRES_DB"] == "imagegate"
    assert check[check.index("-U") + 1] == postgres["environment"]["POSTGRES_USER"]
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    for name in ("redis", "postgres", "minio", "prometheus"):
        named = [v.split(":")[0] for v in services[name]["volumes"] if not v.startswith(".")]
        assert named and set(named) <= set(compose(SHARED)["volumes"]), name


def test_shared_compose_gateway_reaches_the_backends_compose_runs():
    """The URLs the gateway gets name the compose services, their ports, the database postgres
    creates, the bucket minio-init creates, and the credentials those services were given."""
    services = shared_services()
    env = {k: compose_value(v) for k, v in services["gateway"]["environment"].items()}
    redis = urllib.parse.urlsplit(env["IMAGEGATE_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert redis.password == compose_value(services["redis"]["environment"]["REDIS_PASSWORD"])
    assert "$$REDIS_PASSWORD" in " ".join(services["redis"]["command"])
    dsn = urllib.parse.urlsplit(env["IMAGEGATE_POSTGRES_DSN"])
    postgres = {k: compose_value(v) for k, v in services["postgres"]["environment"].items()}
    assert (dsn.scheme, dsn.hostname, dsn.port) == ("postgresql", "postgres", 5432)
    assert (dsn.username, dsn.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert dsn.path == "/" + postgres["POSTGRES_DB"]
    s3 = raw_toml(DEPLOY / "config.shared.toml")["s3"]
    endpoint = urllib.parse.urlsplit(s3["endpoint_url"])
    assert (endpoint.hostname, endpoint.port) == ("minio", 9000)
    minio = {k: compose_value(v) for k, v in services["minio"]["environment"].items()}
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    script = services["minio-init"]["command"][0]
    alias = re.search(r"mc alias set (\S+) (\S+) ", script)
    assert alias and alias[2] == s3["endpoint_url"]
    assert f"mc mb --ignore-existing {alias[1]}/{s3['bucket']}" in script


def test_shared_compose_passes_every_variable_the_shared_config_reads():
    environment = shared_services()["gateway"]["environment"]
    read = config_variables((DEPLOY / "config.shared.toml").read_text())
    assert set(read) <= set(environment)
    for name, required in read.items():
        # a required variable is required by compose as well, or built from required ones
        if required:
            assert re.search(r"\$\{\w+:\?", environment[name]), name


def test_shared_compose_migrate_copies_the_embedded_stack_into_the_shared_stores():
    services, volumes = shared_services(), compose(SHARED)["volumes"]
    migrate, gateway = services["migrate"], services["gateway"]
    assert migrate["profiles"] == ["migrate"]  # not started by `up`
    assert migrate["image"] == gateway["image"] and migrate["environment"] == gateway["environment"]
    command = migrate["command"]
    assert command[:2] == ["imagegate", "migrate"]
    source, target = command[command.index("--from") + 1], command[command.index("--to") + 1]
    mounts = bind_mounts(migrate)
    assert mounts[source] == DEPLOY / "config.toml"  # what compose.yaml's gateway serves
    assert mounts[target] == served_config(gateway["command"], gateway)
    named = dict(v.split(":")[::-1][-2:] for v in migrate["volumes"] if not v.startswith("."))
    data_dir = raw_toml(DEPLOY / "config.toml")["storage"]["data_dir"]
    embedded = compose()["services"]["gateway"]["volumes"]
    [embedded_volume] = [v.split(":")[0] for v in embedded if v.endswith(":" + data_dir)]
    volume = volumes[named[data_dir]]
    # compose names a project's volumes <project>_<volume>
    assert volume == {"external": True, "name": f"{compose()['name']}_{embedded_volume}"}


def test_shared_prometheus_scrapes_every_replica_by_dns():
    config = load_yaml(PROMETHEUS / "prometheus.shared.yml")
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [sd] = jobs["imagegate"]["dns_sd_configs"]  # ImagegateDown watches job="imagegate"
    assert sd["names"] == ["gateway"] and sd["type"] == "A"
    assert str(sd["port"]) == instructions("EXPOSE", "final")[0]
    assert jobs["imagegate"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": METRICS_KEY_FILE,
    }
    assert METRICS_KEY_FILE.rsplit("/", 1)[1] in shared_services()["prometheus"]["secrets"]
    assert compose(SHARED)["secrets"] == compose()["secrets"]
    [target] = jobs["haproxy"]["static_configs"][0]["targets"]
    assert target == f"lb:{haproxy_bind('stats')}"


# ---- the load balancer ------------------------------------------------------------------------


def haproxy_sections() -> dict[str, list[list[str]]]:
    """ "kind name" (or "global", "defaults") -> its lines, split into words, comments dropped."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for raw in HAPROXY.read_text(encoding="utf-8").splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if not raw[0].isspace():
            current = sections.setdefault(" ".join(words), [])
        else:
            current.append(words)
    return sections


def haproxy_lines(section: str, keyword: str) -> list[list[str]]:
    return [words[1:] for words in haproxy_sections()[section] if words[0] == keyword]


def haproxy_bind(frontend: str) -> str:
    [[address]] = haproxy_lines(f"frontend {frontend}", "bind")
    return address.rsplit(":", 1)[1]


def seconds(value: str) -> float:
    """An HAProxy time ("400s", "5m"; a bare number is milliseconds) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2] or "ms"]


def test_haproxy_balances_over_every_replica_and_checks_readyz():
    [[backend]] = haproxy_lines("frontend imagegate", "default_backend")
    section = f"backend {backend}"
    assert haproxy_lines(section, "balance") == [["roundrobin"]]
    assert haproxy_lines(section, "http-check")[0][1:] == ["meth", "GET", "uri", "/readyz"]
    assert ["expect", "status", "200"] in haproxy_lines(section, "http-check")
    [defaults] = haproxy_lines(section, "default-server")
    assert "check" in defaults
    resolvers = defaults[defaults.index("resolvers") + 1]
    assert haproxy_lines(f"resolvers {resolvers}", "nameserver") == [["dns", "127.0.0.11:53"]]
    templates = {words[0]: words[1:] for words in haproxy_lines(section, "server-template")}
    gateway = shared_services()["gateway"]
    port = instructions("EXPOSE", "final")[0]
    ready, fallback = templates["gateway"], templates["degraded"]
    # enough slots for every replica, at the service's name (one A record per replica)
    assert int(ready[0]) >= gateway["deploy"]["replicas"]
    assert ready[1] == fallback[1] == f"gateway:{port}"
    assert fallback[2:] == ["backup", "no-check"]  # only when no replica is ready
    assert haproxy_bind("imagegate") == port


def test_haproxy_waits_for_a_slow_generation():
    """No byte moves while a provider generates: HAProxy's inactivity timeouts must outlast
    the gateway's own worst case (every attempt at its provider timeout), or the client gets
    HAProxy's 504 for an image the gateway is still paying for."""
    settings = load_settings(DEPLOY / "config.toml", KEYS)
    worst = settings.routing.max_attempts * max(
        p.timeout_seconds for p in settings.providers.values()
    )
    timeouts = {words[0]: seconds(words[1]) for words in haproxy_lines("defaults", "timeout")}
    assert timeouts["server"] > worst and timeouts["client"] > worst
    assert timeouts["http-keep-alive"] < settings.server.keepalive_timeout_seconds


def test_haproxy_accepts_its_config():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not on PATH (Debian: apt-get install haproxy)")
    assert "Configuration file is valid" in run([haproxy, "-c", "-f", str(HAPROXY)])
