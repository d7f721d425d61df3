"""Settings: TOML file -> frozen `Settings`, over built-in defaults.

Resolution: `--config PATH`, else `$IMAGEGATE_CONFIG`, else `./config.toml`, else the
built-in defaults alone. A file holds only what it changes. String values may read the
environment as `${VAR}` or `${VAR:-default}` (an unset VAR without a default reads as ""),
or as `${VAR:?message}`: required, so an unset or empty VAR stops the load with the message.
Every error names the TOML path and what is wrong.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.catalog import Catalog
from policies.catalog_config import CatalogError
from proxy.catalog_loader import load_catalog
from proxy.config_cost import CostConfigError, CostSettings, parse_cost
from proxy.providers.allowlist import HostAllowList

__all__ = [
    "CacheSettings",
    "ConfigError",
    "LoggingSettings",
    "ProviderSettings",
    "RoutingSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "find_config",
    "load_settings",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")


class ConfigError(Exception):
    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")
        self.path = path


class Secret:
    """A credential: compared and used, never shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str = ""
    max_body_mb: int = 64
    event_loop: str = "auto"  # auto (uvloop when installed) | uvloop | asyncio
    # Slow and idle connections (seconds): a new connection's first request headers, the
    # wait for the next request on a kept-alive one, a request body that sends nothing.
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 75.0
    body_timeout_seconds: float = 60.0
    metrics_key: Secret = field(default_factory=lambda: Secret(""))  # Bearer for /metrics
    loop_lag_interval_seconds: float = 0.1  # event-loop lag probe period; 0: off


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl_seconds: float | None = None
    max_bytes: int | None = None
    share_across_teams: bool = False
    memory_mb: int = (
        128  # per worker: hot answers, base64 and image bytes (proxy/hot.py, memory.py)
    )


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = "info"
    format: str = "auto"  # auto (console on a terminal, else json) | json | console
    flush_ms: int = 250  # JSON lines are written out at least this often; 0: every line


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: str = ""  # openai | replicate | fal | placeholder; built-in names imply it
    enabled: bool | None = None  # None: decided by whether credentials are present
    api_key: Secret = field(default_factory=lambda: Secret(""))
    base_url: str = ""
    timeout_seconds: float = 120.0
    download_hosts: tuple[str, ...] = ()
    max_image_mb: int = 50
    requests_per_minute: int | None = None  # the upstream's limit, kept by the gateway


@dataclass(frozen=True, slots=True)
class UploadSettings:
    # Hosts whose http(s) URLs a JSON edit's `image_url` may name; empty: data: URLs only.
    # Rules as a provider's download_hosts (exact names; `*.suffix` is https and public only).
    url_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    substitute: str = "never"  # never | equivalent | cheaper
    commercial_only: bool = False
    breaker_failures: int = 3
    breaker_cooldown_seconds: float = 30.0
    max_attempts: int = 3  # models tried per request before giving up


def _default_catalog() -> Catalog:
    return load_catalog()


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    data_dir: Path = Path(".imagegate")
    cache: CacheSettings = field(default_factory=CacheSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    default_model: str = "gpt-image-1.5"
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    catalog: Catalog = field(default_factory=_default_catalog)
    cost: CostSettings = field(default_factory=CostSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    source: str = "built-in defaults"


# section -> key -> (type, TOML path help). Types: the Python type the value must have.
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "server": {
        "host": (str, "an address"),
        "port": (int, "0-65535"),
        "public_base_url": (str, "a URL"),
        "max_body_mb": (int, "MiB"),
        "event_loop": (str, "auto|uvloop|asyncio"),
        "header_timeout_seconds": ((int, float), "seconds"),
        "keepalive_timeout_seconds": ((int, float), "seconds"),
        "body_timeout_seconds": ((int, float), "seconds"),
        "metrics_key": (str, "a secret (16+ characters), or empty"),
        "loop_lag_interval_seconds": ((int, float), "seconds, 0 for off"),
    },
    "storage": {"data_dir": (str, "a directory")},
    "cache": {
        "ttl_seconds": ((int, float), "seconds"),
        "max_bytes": (int, "bytes"),
        "share_across_teams": (bool, "true or false"),
        "memory_mb": (int, "MiB per worker, 0 for none"),
    },
    "logging": {
        "level": (str, "debug|info|warning|error"),
        "format": (str, "auto|json|console"),
        "flush_ms": (int, "milliseconds, 0 for every line"),
    },
    "defaults": {"model": (str, "a model name")},
    "uploads": {"url_hosts": (list, "a list of host names or *.suffix patterns")},
    "routing": {
        "substitute": (str, "never|equivalent|cheaper"),
        "commercial_only": (bool, "true or false"),
        "breaker_failures": (int, "a count"),
        "breaker_cooldown_seconds": ((int, float), "seconds"),
        "max_attempts": (int, "a count"),
    },
}
_PROVIDER_KEYS: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "enabled": bool,
    "api_key": str,
    "api_token": str,
    "base_url": str,
    "timeout_seconds": (int, float),
    "download_hosts": list,
    "max_image_mb": int,
    "requests_per_minute": int,
}
_KINDS = ("placeholder", "openai", "replicate", "fal")


def find_config(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get("IMAGEGATE_CONFIG"):
        return Path(environ["IMAGEGATE_CONFIG"])
    default = Path("config.toml")
    return default if default.is_file() else None


def load_settings(path: Path | None, environ: Mapping[str, str] = os.environ) -> Settings:
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, "", "file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, "", f"cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    try:
        raw = _interpolate(raw, environ)
    except _Required as exc:
        raise ConfigError(source, "", str(exc)) from None
    return _build(raw, source, environ)


class _Required(Exception):
    """A `${VAR:?message}` whose VAR is unset or empty."""


def _variable(match: re.Match[str], environ: Mapping[str, str]) -> str:
    value = environ.get(match[1], "")
    if match[2] == "?":
        if not value:
            raise _Required(f"${match[1]} is required: {match[3] or 'set it'}")
        return value
    return value if match[1] in environ else match[3] or ""


def _interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: _variable(m, environ), value)
    if isinstance(value, dict):
        return {k: _interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ) for v in value]
    return value


def _section(raw: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = raw.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(source, name, "must be a table ([" + name + "])")
    schema = _SCHEMA[name]
    for key, value in section.items():
        if key not in schema:
            raise ConfigError(source, f"{name}.{key}", f"unknown key; known: {', '.join(schema)}")
        typ, hint = schema[key]
        if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
            raise ConfigError(source, f"{name}.{key}", f"expected {hint}, got {value!r}")
    return section


def _build(raw: dict[str, Any], source: str, environ: Mapping[str, str]) -> Settings:
    known = {*_SCHEMA, "providers", "models", "families", "auth", "keys", "budgets", "policy"}
    for name in raw:
        if name not in known:
            raise ConfigError(source, name, f"unknown section; known: {', '.join(sorted(known))}")
    server = _section(raw, "server", source)
    port = server.get("port", 8080)
    if not 0 <= port <= 65535:
        raise ConfigError(source, "server.port", f"must be 0-65535, got {port}")
    loop = server.get("event_loop", "auto")
    _check_choice(source, "server.event_loop", loop, ("auto", "uvloop", "asyncio"))
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(source, "server.event_loop", "uvloop is not installed; use auto")
    _check_server_times(source, server)
    if server.get("metrics_key"):
        if len(server["metrics_key"]) < 16:
            raise ConfigError(source, "server.metrics_key", "must be 16 or more characters")
        server = {**server, "metrics_key": Secret(server["metrics_key"])}
    else:  # unset, or "${VAR}" of an unset VAR
        server = {k: v for k, v in server.items() if k != "metrics_key"}
    storage = _section(raw, "storage", source)
    cache = _section(raw, "cache", source)
    for key in ("ttl_seconds", "max_bytes"):
        if key in cache and cache[key] <= 0:
            raise ConfigError(source, f"cache.{key}", "must be positive (leave it out for none)")
    if cache.get("memory_mb", 0) < 0:
        raise ConfigError(source, "cache.memory_mb", "must be 0 (off) or more")
    log = _section(raw, "logging", source)
    _check_choice(
        source, "logging.level", log.get("level", "info"), ("debug", "info", "warning", "error")
    )
    _check_choice(source, "logging.format", log.get("format", "auto"), ("auto", "json", "console"))
    if not 0 <= log.get("flush_ms", 250) <= 60_000:
        raise ConfigError(source, "logging.flush_ms", "must be 0-60000 milliseconds")
    data_dir = environ.get("IMAGEGATE_DATA_DIR") or storage.get("data_dir") or ".imagegate"
    return Settings(
        server=ServerSettings(**server),
        data_dir=Path(data_dir),
        cache=CacheSettings(**cache),
        logging=LoggingSettings(**log),
        default_model=_section(raw, "defaults", source).get("model", "gpt-image-1.5"),
        providers=_providers(raw.get("providers", {}), source),
        routing=_routing(raw, source),
        catalog=_catalog(raw.get("models", {}), source, raw.get("families", {})),
        cost=_cost(raw, source),
        uploads=_uploads(raw, source),
        source=source,
    )


def _routing(raw: dict[str, Any], source: str) -> RoutingSettings:
    table = _section(raw, "routing", source)
    _check_choice(
        source,
        "routing.substitute",
        table.get("substitute", "never"),
        ("never", "equivalent", "cheaper"),
    )
    return RoutingSettings(**table)


def _uploads(raw: dict[str, Any], source: str) -> UploadSettings:
    hosts = _section(raw, "uploads", source).get("url_hosts", [])
    if not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError(source, "uploads.url_hosts", "must be a list of host names")
    return UploadSettings(url_hosts=tuple(hosts))


def _cost(raw: dict[str, Any], source: str) -> CostSettings:
    try:
        return parse_cost(raw)
    except CostConfigError as exc:
        raise ConfigError(source, exc.path, exc.problem) from None


def _catalog(raw: Any, source: str, families: Any) -> Catalog:
    if not isinstance(raw, dict):
        raise ConfigError(source, "models", "must be a table of [models.<name>]")
    if not isinstance(families, dict):
        raise ConfigError(source, "families", "must be a table of [families.<name>]")
    try:
        return load_catalog(raw, families)
    except CatalogError as exc:
        raise ConfigError(source, exc.path, exc.problem) from None


def _check_server_times(source: str, server: dict[str, Any]) -> None:
    for key in ("header_timeout_seconds", "keepalive_timeout_seconds", "body_timeout_seconds"):
        if key in server and not 0 < server[key] <= 86_400:
            raise ConfigError(source, f"server.{key}", "must be more than 0 and at most 86400")
    lag = server.get("loop_lag_interval_seconds", 0.1)
    if lag != 0 and not 0.001 <= lag <= 60:
        raise ConfigError(
            source, "server.loop_lag_interval_seconds", "must be 0 (off) or 0.001-60 seconds"
        )


def _check_choice(source: str, path: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(source, path, f"expected one of {', '.join(choices)}, got {value!r}")


def _providers(raw: Any, source: str) -> dict[str, ProviderSettings]:
    if not isinstance(raw, dict):
        raise ConfigError(source, "providers", "must be a table of [providers.<name>]")
    return {name: _provider(name, table, source) for name, table in raw.items()}


def _provider(name: str, table: Any, source: str) -> ProviderSettings:
    path = f"providers.{name}"
    if not isinstance(table, dict):
        raise ConfigError(source, path, "must be a table")
    for key, value in table.items():
        typ = _PROVIDER_KEYS.get(key)
        if typ is None:
            raise ConfigError(
                source, f"{path}.{key}", f"unknown key; known: {', '.join(_PROVIDER_KEYS)}"
            )
        if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
            raise ConfigError(source, f"{path}.{key}", f"wrong type: {type(value).__name__}")
    kind = table.get("kind") or (name if name in _KINDS else "")
    if kind not in _KINDS:
        raise ConfigError(
            source,
            f"{path}.kind",
            f"must be one of {', '.join(_KINDS)} (required for a provider named {name!r})",
        )
    hosts = table.get("download_hosts", [])
    if not all(isinstance(h, str) for h in hosts):
        raise ConfigError(source, f"{path}.download_hosts", "must be a list of host names")
    try:
        HostAllowList(hosts)
    except ValueError as exc:
        raise ConfigError(source, f"{path}.download_hosts", str(exc)) from None
    secret = table.get("api_key") or table.get("api_token") or ""
    return ProviderSettings(
        name=name,
        kind=kind,
        enabled=table.get("enabled"),
        api_key=Secret(secret),
        base_url=table.get("base_url", ""),
        timeout_seconds=float(table.get("timeout_seconds", 120.0)),
        download_hosts=tuple(hosts),
        max_image_mb=table.get("max_image_mb", 50),
        requests_per_minute=table.get("requests_per_minute"),
    )
