"""Hypothesis strategies for valid `Settings` (everything but the catalog, which the catalog
tests cover): each value within what the reader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from policies.budget import BudgetSpec
from policies.config_values import Secret
from proxy.config import (
    CacheSettings,
    LoggingSettings,
    PostgresSettings,
    ProviderSettings,
    RedisSettings,
    RoutingSettings,
    S3Settings,
    ServerSettings,
    Settings,
    StorageSettings,
    UploadSettings,
)
from proxy.config_cost import CostSettings, KeySettings, PolicySettings

__all__ = ["any_settings"]

# TOML strings hold any character but controls; `$` would start a ${VAR}.
_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="$")
TEXT = st.text(_CHARS, max_size=12)
FILLED = st.text(_CHARS, min_size=1, max_size=12)
NAME = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
HOST = st.from_regex(r"(\*\.)?[a-z]{1,8}\.example\.com", fullmatch=True)
SECONDS = st.floats(min_value=0, max_value=86_400, exclude_min=True)
MICROS = st.integers(0, 10**14)  # dollars with 6 decimals, within a float's 15 digits
WINDOW = st.sampled_from(["day", "month", "total"])


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


SERVER = st.builds(
    ServerSettings,
    host=TEXT,
    port=st.integers(0, 65535),
    public_base_url=TEXT,
    max_body_mb=st.integers(1, 10**6),
    event_loop=st.sampled_from(["auto", "asyncio"]),
    header_timeout_seconds=SECONDS,
    keepalive_timeout_seconds=SECONDS,
    body_timeout_seconds=SECONDS,
    metrics_key=st.just(Secret("")) | st.text(_CHARS, min_size=16, max_size=20).map(Secret),
    loop_lag_interval_seconds=st.just(0.0) | st.floats(0.001, 60),
)
CACHE = st.builds(
    CacheSettings,
    ttl_seconds=_maybe(st.floats(min_value=0, max_value=1e9, exclude_min=True)),
    max_bytes=_maybe(st.integers(1, 2**62)),
    share_across_teams=st.booleans(),
    memory_mb=st.integers(0, 10**5),
)
LOGGING = st.builds(
    LoggingSettings,
    level=st.sampled_from(["debug", "info", "warning", "error"]),
    format=st.sampled_from(["auto", "json", "console"]),
    flush_ms=st.integers(0, 60_000),
)
ROUTING = st.builds(
    RoutingSettings,
    substitute=st.sampled_from(["never", "equivalent", "cheaper"]),
    commercial_only=st.booleans(),
    breaker_failures=st.integers(1, 100),
    breaker_cooldown_seconds=st.floats(0, 1e6),
    max_attempts=st.integers(1, 10),
)
UPLOADS = st.builds(UploadSettings, url_hosts=st.lists(HOST, max_size=3).map(tuple))


def _provider(name: str) -> st.SearchStrategy[ProviderSettings]:
    return st.builds(
        ProviderSettings,
        name=st.just(name),
        kind=st.sampled_from(["placeholder", "openai", "replicate", "fal"]),
        enabled=_maybe(st.booleans()),
        api_key=TEXT.map(Secret),
        base_url=TEXT,
        timeout_seconds=st.floats(min_value=0, max_value=1e5, exclude_min=True),
        download_hosts=st.lists(HOST, max_size=2).map(tuple),
        max_image_mb=st.integers(1, 1000),
        requests_per_minute=_maybe(st.integers(1, 10**6)),
    )


PROVIDERS = st.lists(NAME, max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: _provider(n) for n in names})
)


def _key(name: str) -> st.SearchStrategy[KeySettings]:
    return st.builds(
        KeySettings,
        name=st.just(name),
        secret=st.text(_CHARS, min_size=16, max_size=20),
        team=_maybe(FILLED),
        budget_micros=_maybe(MICROS),
        budget_window=WINDOW,
        requests_per_minute=_maybe(st.integers(1, 10**6)),
        images_per_minute=_maybe(st.integers(1, 10**6)),
        models=_maybe(st.lists(FILLED, max_size=3).map(tuple)),
    )


COST = st.builds(
    CostSettings,
    admin_key=TEXT,
    keys=st.lists(FILLED, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*(_key(n) for n in names))
    ),
    global_budget=_maybe(
        st.builds(BudgetSpec, st.just("global"), st.just("global"), MICROS, WINDOW)
    ),
    team_budgets=st.lists(FILLED, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(
            *(st.builds(BudgetSpec, st.just("team"), st.just(n), MICROS, WINDOW) for n in names)
        )
    ),
    pressure_share=_maybe(st.floats(min_value=0, max_value=1, exclude_min=True)),
    policy=st.builds(
        PolicySettings,
        deny_patterns=st.lists(
            st.sampled_from([r"(?i)\bdeepfake\b", "abc", "^x+$"]), max_size=2
        ).map(tuple),
        commercial_only=st.booleans(),
        safety=st.sampled_from(["strict", "moderate", "permissive"]),
    ),
)


@st.composite
def any_settings(draw: st.DrawFn) -> Settings:
    storage = StorageSettings(
        backend=draw(st.sampled_from(["embedded", "shared"])),
        data_dir=Path(draw(FILLED.filter(lambda t: Path(t) != Path(".") and "\x00" not in t))),
    )
    return Settings(
        server=draw(SERVER),
        data_dir=storage.data_dir,
        cache=draw(CACHE),
        logging=draw(LOGGING),
        default_model=draw(TEXT),
        providers=draw(PROVIDERS),
        routing=draw(ROUTING),
        cost=draw(COST),
        uploads=draw(UPLOADS),
        storage=storage,
        redis=RedisSettings(url=Secret(draw(FILLED)), prefix=draw(TEXT)),
        postgres=PostgresSettings(dsn=Secret(draw(FILLED))),
        s3=draw(
            st.builds(
                S3Settings,
                endpoint_url=TEXT,
                bucket=FILLED,
                prefix=TEXT,
                region=TEXT,
                access_key_id=TEXT.map(Secret),
                secret_access_key=TEXT.map(Secret),
            )
        ),
    )
