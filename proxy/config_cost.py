"""Cost-control settings: `[auth]`, `[[keys]]`, `[budgets]`, `[policy]`.

```toml
[auth]
admin_key = "${IMAGEGATE_ADMIN_KEY}"

[[keys]]
name = "web-app"
key = "${WEB_APP_KEY}"          # the secret; stored and compared only as a hash
team = "growth"
budget_usd = 25.0
budget_window = "day"           # day | month | total (calendar windows, UTC)
requests_per_minute = 120
images_per_minute = 60
models = ["auto", "flux-schnell", "gpt-image-1-mini"]

[budgets]
global_usd = 500.0
global_window = "month"
pressure_share = 0.8            # past this share of a budget, auto routes to the cheap tier
teams = { growth = { usd = 100.0, window = "month" } }

[policy]
deny_patterns = ["(?i)\\bdeepfake\\b"]
commercial_only = false
safety = "moderate"             # strict | moderate | permissive
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.budget import BudgetSpec, Window
from policies.config_schema import ConfigError, read_table, setting
from policies.config_values import check_patterns, micros_to_usd, usd_to_micros
from policies.routing import Safety

__all__ = [
    "CostConfigError",
    "CostSettings",
    "KeySettings",
    "PolicySettings",
    "parse_cost",
    "usd_to_micros",
]

CostConfigError = ConfigError  # the name older callers catch; one error for every section


def _named(name: str, path: str) -> None:
    if not name:
        raise ConfigError(path, "is required")


def _long_secret(secret: str, path: str) -> None:
    if len(secret) < 16:
        raise ConfigError(path, f"is required: {_SECRET_HINT}")


_SECRET_HINT = "a secret of at least 16 characters (unset environment variable?)"  # noqa: S105  # words, not a secret
_DOLLARS: dict[str, Any] = {"read": usd_to_micros, "show": micros_to_usd}


def _team(value: Any, path: str) -> str | None:
    if not isinstance(value, str):
        raise ConfigError(path, "must be a string")
    return value or None  # "${TEAM}" of an unset TEAM: no team


@dataclass(frozen=True, slots=True)
class KeySettings:
    """One `[[keys]]` entry: an API key declared in config (config wins over the admin API)."""

    name: str = setting(check=_named)
    secret: str = setting(toml="key", repr=False, problem=_SECRET_HINT, check=_long_secret)
    team: str | None = setting(None, read=_team)
    budget_micros: int | None = setting(None, toml="budget_usd", **_DOLLARS)
    budget_window: Window = "day"
    requests_per_minute: int | None = setting(
        None, hint="a positive whole number", low=1, problem="must be a positive whole number"
    )
    images_per_minute: int | None = setting(
        None, hint="a positive whole number", low=1, problem="must be a positive whole number"
    )
    models: tuple[str, ...] | None = setting(None, hint="a list of model names")


@dataclass(frozen=True, slots=True)
class PolicySettings:
    deny_patterns: tuple[str, ...] = setting(
        (), hint="a list of regular expressions", check=check_patterns
    )
    commercial_only: bool = False
    safety: Safety = "moderate"


@dataclass(frozen=True, slots=True)
class CostSettings:
    admin_key: str = field(default="", repr=False)
    keys: tuple[KeySettings, ...] = ()
    global_budget: BudgetSpec | None = None
    team_budgets: tuple[BudgetSpec, ...] = ()
    pressure_share: float | None = None
    policy: PolicySettings = PolicySettings()


@dataclass(frozen=True, slots=True)
class _Auth:
    admin_key: str = setting("", repr=False, hint="a secret")


@dataclass(frozen=True, slots=True)
class _Team:
    usd: int = setting(**_DOLLARS)
    window: Window = "month"


def _teams(raw: Any, path: str) -> tuple[BudgetSpec, ...]:
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be a table of team = { usd, window }")
    out = []
    for name, table in raw.items():
        where = f"{path}.{name}"
        if not isinstance(table, dict) or "usd" not in table:
            raise ConfigError(where, 'must be { usd = <dollars>, window = "day|month|total" }')
        team = read_table(_Team, table, where)
        out.append(BudgetSpec("team", name, team.usd, team.window))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Budgets:
    global_usd: int | None = setting(None, **_DOLLARS)
    global_window: Window = "month"
    pressure_share: float | None = setting(
        None,
        above=0,
        high=1,
        hint="a share between 0 and 1",
        problem="must be a share between 0 and 1",
    )
    teams: tuple[BudgetSpec, ...] = setting((), read=_teams)


def parse_cost(raw: dict[str, Any]) -> CostSettings:
    """`[auth]`, `[[keys]]`, `[budgets]` and `[policy]` of a config (the rest is ignored)."""
    budgets = read_table(_Budgets, raw.get("budgets", {}), "budgets")
    glob = budgets.global_usd
    return CostSettings(
        admin_key=read_table(_Auth, raw.get("auth", {}), "auth").admin_key,
        keys=_keys(raw.get("keys", [])),
        global_budget=None
        if glob is None
        else BudgetSpec("global", "global", glob, budgets.global_window),
        team_budgets=budgets.teams,
        pressure_share=budgets.pressure_share,
        policy=read_table(PolicySettings, raw.get("policy", {}), "policy"),
    )


def _keys(raw: Any) -> tuple[KeySettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError("keys", "must be an array of tables ([[keys]])")
    keys = tuple(read_table(KeySettings, item, f"keys[{i}]") for i, item in enumerate(raw))
    seen: set[str] = set()
    for key in keys:
        if key.name in seen:
            raise ConfigError("keys", f"two keys share a name: {key.name!r}")
        seen.add(key.name)
    return keys
