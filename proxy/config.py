"""Settings: TOML file -> frozen `Settings`, over built-in defaults, read once at start.

Resolution: `--config PATH`, else `$IMAGEGATE_CONFIG`, else `./config.toml`, else the
built-in defaults alone. A file holds only what it changes: a key it leaves out keeps its
default, and the model catalog is the built-in one with the file's `[models]` merged over it.
String values may read the environment (`proxy.config_env`). Every section is read by one
schema-driven reader (`policies.config_schema`) into the core's own types (`Substitute`,
`Safety`, `Window`, `BudgetSpec`, `Breaker`), and every problem is one `ConfigError` naming
the file, the TOML path and what is wrong.

Sections: `proxy.config_sections` (server, cache, logging, uploads, routing, defaults),
`proxy.config_providers`, `proxy.config_cost` (auth, keys, budgets, policy),
`proxy.config_shared` (storage, redis, postgres, s3), `proxy.catalog_loader` (models, families).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from policies.catalog import Catalog
from policies.config_schema import ConfigError, read_table, refuse_unknown
from policies.config_values import Secret
from proxy.catalog_loader import load_catalog
from proxy.config_cost import CostSettings, parse_cost
from proxy.config_env import expand_environment, read_toml
from proxy.config_providers import ProviderSettings, read_providers
from proxy.config_sections import (
    CacheSettings,
    DefaultsSettings,
    LoggingSettings,
    RoutingSettings,
    ServerSettings,
    UploadSettings,
)
from proxy.config_shared import (
    DEFAULT_DATA_DIR,
    PostgresSettings,
    RedisSettings,
    S3Settings,
    StorageSettings,
    require_shared,
)

__all__ = [
    "CacheSettings",
    "ConfigError",
    "LoggingSettings",
    "PostgresSettings",
    "ProviderSettings",
    "RedisSettings",
    "RoutingSettings",
    "S3Settings",
    "Secret",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "UploadSettings",
    "find_config",
    "load_settings",
]

SECTIONS = (
    "server",
    "storage",
    "cache",
    "logging",
    "defaults",
    "uploads",
    "routing",
    "providers",
    "models",
    "families",
    "auth",
    "keys",
    "budgets",
    "policy",
    "redis",
    "postgres",
    "s3",
)


def _default_catalog() -> Catalog:
    return load_catalog()


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    data_dir: Path = DEFAULT_DATA_DIR  # storage.data_dir, or $IMAGEGATE_DATA_DIR
    cache: CacheSettings = field(default_factory=CacheSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    default_model: str = DefaultsSettings().model
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    catalog: Catalog = field(default_factory=_default_catalog)
    cost: CostSettings = field(default_factory=CostSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    source: str = "built-in defaults"
    storage: StorageSettings = field(default_factory=StorageSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    s3: S3Settings = field(default_factory=S3Settings)


def find_config(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    if explicit:
        return Path(explicit)
    if environ.get("IMAGEGATE_CONFIG"):
        return Path(environ["IMAGEGATE_CONFIG"])
    default = Path("config.toml")
    return default if default.is_file() else None


def load_settings(path: Path | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Raises `ConfigError` (its `source` the file) for the first problem found."""
    source = "built-in defaults" if path is None else str(path)
    try:
        raw = {} if path is None else expand_environment(read_toml(path), environ)
        return _build(raw, source, environ)
    except ConfigError as exc:
        raise exc.within(source) from None


def _build(raw: dict[str, Any], source: str, environ: Mapping[str, str]) -> Settings:
    refuse_unknown(raw, "", SECTIONS)
    storage = read_table(StorageSettings, raw.get("storage", {}), "storage")
    if environ.get("IMAGEGATE_DATA_DIR"):
        storage = replace(storage, data_dir=Path(environ["IMAGEGATE_DATA_DIR"]))
    redis = read_table(RedisSettings, raw.get("redis", {}), "redis")
    postgres = read_table(PostgresSettings, raw.get("postgres", {}), "postgres")
    s3 = read_table(S3Settings, raw.get("s3", {}), "s3")
    require_shared(storage, redis, postgres, s3)
    return Settings(
        server=read_table(ServerSettings, raw.get("server", {}), "server"),
        data_dir=storage.data_dir,
        cache=read_table(CacheSettings, raw.get("cache", {}), "cache"),
        logging=read_table(LoggingSettings, raw.get("logging", {}), "logging"),
        default_model=read_table(DefaultsSettings, raw.get("defaults", {}), "defaults").model,
        providers=read_providers(raw.get("providers", {})),
        routing=read_table(RoutingSettings, raw.get("routing", {}), "routing"),
        catalog=_catalog(raw.get("models", {}), raw.get("families", {})),
        cost=parse_cost(raw),
        uploads=read_table(UploadSettings, raw.get("uploads", {}), "uploads"),
        source=source,
        storage=storage,
        redis=redis,
        postgres=postgres,
        s3=s3,
    )


def _catalog(models: Any, families: Any) -> Catalog:
    if not isinstance(models, dict):
        raise ConfigError("models", "must be a table of [models.<name>]")
    if not isinstance(families, dict):
        raise ConfigError("families", "must be a table of [families.<name>]")
    return load_catalog(models, families)
