"""`[providers.<name>]`: one table per upstream. A built-in name (openai, replicate, fal,
placeholder) implies its kind; any other name says `kind`. The SDK-backed ones take
`api_key` (OpenAI) or `api_token` (Replicate): the same field, by either name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from policies.config_schema import ConfigError, expect_table, read_table, setting
from policies.config_values import Secret
from proxy.providers.allowlist import HostAllowList

__all__ = ["ProviderKind", "ProviderSettings", "read_providers"]

ProviderKind = Literal["placeholder", "openai", "replicate", "fal"]
_KINDS: tuple[str, ...] = get_args(ProviderKind)


def _download_hosts(hosts: tuple[str, ...], path: str) -> None:
    try:
        HostAllowList(hosts)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str = setting(fixed=True)  # the table's name
    kind: ProviderKind = setting()
    enabled: bool | None = None  # None: decided by whether credentials are present
    api_key: Secret = setting(Secret(""), aliases=("api_token",), hint="a secret")
    base_url: str = setting("", hint="a URL")
    timeout_seconds: float = setting(120.0, hint="seconds", above=0)
    download_hosts: tuple[str, ...] = setting(
        (), hint="a list of host names", check=_download_hosts
    )
    max_image_mb: int = setting(50, hint="MiB", low=1)
    requests_per_minute: int | None = setting(  # the upstream's limit, kept by the gateway
        None, hint="a positive whole number", low=1
    )


def read_providers(raw: object) -> dict[str, ProviderSettings]:
    if not isinstance(raw, dict):
        raise ConfigError("providers", "must be a table of [providers.<name>]")
    return {name: _provider(name, table) for name, table in raw.items()}


def _provider(name: str, raw: Any) -> ProviderSettings:
    path = f"providers.{name}"
    table = expect_table(raw, path)
    kind = table.get("kind") or (name if name in _KINDS else "")
    if kind not in _KINDS:
        raise ConfigError(
            f"{path}.kind",
            f"must be one of {', '.join(_KINDS)} (required for a provider named {name!r})",
        )
    return read_table(ProviderSettings, {**table, "kind": kind}, path, name=name)
