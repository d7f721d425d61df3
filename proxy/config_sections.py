"""The gateway's own settings sections: `[server]`, `[cache]`, `[logging]`, `[uploads]`,
`[routing]`, `[defaults]`. Each class is its section's schema (`policies.config_schema`):
field names are TOML keys, defaults are the built-in defaults, `setting(...)` the limits."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

from policies.circuit import Breaker
from policies.config_schema import ConfigError, setting
from policies.config_values import Secret
from policies.routing import Substitute

__all__ = [
    "CacheSettings",
    "DefaultsSettings",
    "EventLoop",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "RoutingSettings",
    "ServerSettings",
    "UploadSettings",
]

EventLoop = Literal["auto", "uvloop", "asyncio"]  # auto: uvloop when installed
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]  # auto: console on a terminal, else json

_DAY = 86_400


def _installed(loop: str, path: str) -> None:
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(path, "uvloop is not installed; use auto")


def _metrics_key(key: Secret, path: str) -> None:
    if key and len(key.reveal()) < 16:  # empty (or an unset ${VAR}): the admin key guards it
        raise ConfigError(path, "must be 16 or more characters")


def _lag(seconds: float, path: str) -> None:
    if seconds != 0 and not 0.001 <= seconds <= 60:
        raise ConfigError(path, "must be 0 (off) or 0.001-60 seconds")


def _timeout(default: float) -> Any:
    return setting(
        default, hint="seconds", above=0, high=_DAY, problem="must be more than 0 and at most 86400"
    )


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = setting("127.0.0.1", hint="an address")
    port: int = setting(8080, hint="0-65535", low=0, high=65535, problem="must be 0-65535")
    public_base_url: str = setting("", hint="a URL")
    max_body_mb: int = setting(64, hint="MiB", low=1)
    # asyncio: under load uvloop answered the requests it had read in bursts, so p99s of
    # large hits were 4-17x asyncio's at the same throughput (BENCHMARKS.md, round two).
    event_loop: EventLoop = setting("asyncio", check=_installed)
    # Slow and idle connections (seconds): a new connection's first request headers, the
    # wait for the next request on a kept-alive one, a request body that sends nothing.
    header_timeout_seconds: float = _timeout(10.0)
    keepalive_timeout_seconds: float = _timeout(75.0)
    body_timeout_seconds: float = _timeout(60.0)
    metrics_key: Secret = setting(  # Bearer for /metrics
        Secret(""), hint="a secret (16+ characters), or empty", check=_metrics_key
    )
    loop_lag_interval_seconds: float = setting(  # event-loop lag probe period; 0: off
        0.1, hint="seconds, 0 for off", check=_lag
    )


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl_seconds: float | None = setting(
        None, hint="seconds", above=0, problem="must be positive (leave it out for none)"
    )
    max_bytes: int | None = setting(
        None, hint="bytes", above=0, problem="must be positive (leave it out for none)"
    )
    share_across_teams: bool = False
    # per worker: hot answers, base64 and image bytes (proxy/hot.py, memory.py)
    memory_mb: int = setting(
        128, hint="MiB per worker, 0 for none", low=0, problem="must be 0 (off) or more"
    )


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: LogLevel = "info"
    format: LogFormat = "auto"
    # JSON lines are written out at least this often; 0: every line
    flush_ms: int = setting(
        250,
        hint="milliseconds, 0 for every line",
        low=0,
        high=60_000,
        problem="must be 0-60000 milliseconds",
    )
    # The share of answered hits' request lines that is written: 1.0 every one (the default),
    # 0.1 one in ten, 0 none. Misses, errors and upstream calls are always written.
    sample_hits: float = setting(
        1.0, hint="a share from 0.0 to 1.0", low=0.0, high=1.0,
        problem="must be from 0.0 (no hit lines) to 1.0 (every hit line)",
    )  # fmt: skip


def _host_names(hosts: tuple[str, ...], path: str) -> None:
    if not all(h.strip() for h in hosts):
        raise ConfigError(path, "must be a list of host names")


@dataclass(frozen=True, slots=True)
class UploadSettings:
    # Hosts whose http(s) URLs a JSON edit's `image_url` may name; empty: data: URLs only.
    # Rules as a provider's download_hosts (exact names; `*.suffix` is https and public only).
    url_hosts: tuple[str, ...] = setting(
        (), hint="a list of host names or *.suffix patterns", check=_host_names
    )


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    substitute: Substitute = "never"
    commercial_only: bool = False
    breaker_failures: int = setting(3, hint="a count", low=1)
    breaker_cooldown_seconds: float = setting(30.0, hint="seconds", low=0)
    max_attempts: int = setting(3, hint="a count", low=1)  # models tried per request

    @property
    def breaker(self) -> Breaker:
        """The circuit breaker every model's circuit follows."""
        return Breaker(threshold=self.breaker_failures, cooldown=self.breaker_cooldown_seconds)


@dataclass(frozen=True, slots=True)
class DefaultsSettings:
    model: str = setting("gpt-image-1.5", hint="a model name")  # when a request names none
