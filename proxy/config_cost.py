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

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from policies.budget import MICROS_PER_USD, BudgetSpec

__all__ = ["CostSettings", "KeySettings", "PolicySettings", "parse_cost"]

_WINDOWS = ("day", "month", "total")
_MAX_MICROS = 10**15
_KEY_FIELDS = {
    "name",
    "key",
    "team",
    "budget_usd",
    "budget_window",
    "requests_per_minute",
    "images_per_minute",
    "models",
}


@dataclass(frozen=True, slots=True)
class KeySettings:
    name: str
    secret: str
    team: str | None
    budget_micros: int | None
    budget_window: str
    requests_per_minute: int | None
    images_per_minute: int | None
    models: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class PolicySettings:
    deny_patterns: tuple[str, ...] = ()
    commercial_only: bool = False
    safety: str = "moderate"


@dataclass(frozen=True, slots=True)
class CostSettings:
    admin_key: str = ""
    keys: tuple[KeySettings, ...] = ()
    global_budget: BudgetSpec | None = None
    team_budgets: tuple[BudgetSpec, ...] = ()
    pressure_share: float | None = None
    policy: PolicySettings = PolicySettings()


class CostConfigError(ValueError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def usd_to_micros(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CostConfigError(path, f"expected dollars as a number, got {value!r}")
    try:
        micros = Decimal(str(value)) * MICROS_PER_USD
    except InvalidOperation:
        raise CostConfigError(path, f"not a number: {value!r}") from None
    if micros.is_nan():  # TOML has `nan`; comparing it would raise InvalidOperation
        raise CostConfigError(path, f"not a number: {value!r}")
    if micros < 0 or micros != micros.to_integral_value():
        raise CostConfigError(path, "must be >= 0 with at most 6 decimals")
    if micros > _MAX_MICROS:  # SQLite integers are 64-bit
        raise CostConfigError(path, "must be at most $1,000,000,000")
    return int(micros)


def parse_cost(raw: dict[str, Any]) -> CostSettings:
    auth = _table(raw, "auth", {"admin_key"})
    admin_key = auth.get("admin_key", "")
    if not isinstance(admin_key, str):
        raise CostConfigError("auth.admin_key", "must be a string")
    keys_raw = raw.get("keys", [])
    if not isinstance(keys_raw, list):
        raise CostConfigError("keys", "must be an array of tables ([[keys]])")
    keys = tuple(_key(item, i) for i, item in enumerate(keys_raw))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise CostConfigError("keys", "two keys share a name")
    budgets = _table(raw, "budgets", {"global_usd", "global_window", "pressure_share", "teams"})
    return CostSettings(
        admin_key=admin_key,
        keys=keys,
        global_budget=_global(budgets),
        team_budgets=_teams(budgets.get("teams", {})),
        pressure_share=_share(budgets.get("pressure_share")),
        policy=_policy(_table(raw, "policy", {"deny_patterns", "commercial_only", "safety"})),
    )


def _table(raw: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise CostConfigError(name, "must be a table")
    for key in table:
        if key not in known:
            raise CostConfigError(
                f"{name}.{key}", f"unknown key; known: {', '.join(sorted(known))}"
            )
    return table


def _key(item: Any, index: int) -> KeySettings:
    path = f"keys[{index}]"
    if not isinstance(item, dict):
        raise CostConfigError(path, "must be a table")
    for field in item:
        if field not in _KEY_FIELDS:
            raise CostConfigError(f"{path}.{field}", "unknown key")
    name, secret = item.get("name"), item.get("key")
    if not isinstance(name, str) or not name:
        raise CostConfigError(f"{path}.name", "is required")
    if not isinstance(secret, str) or len(secret) < 16:
        raise CostConfigError(
            f"{path}.key",
            "is required: a secret of at least 16 characters (unset environment variable?)",
        )
    window = item.get("budget_window", "day")
    if window not in _WINDOWS:
        raise CostConfigError(f"{path}.budget_window", f"must be one of {', '.join(_WINDOWS)}")
    models = item.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise CostConfigError(f"{path}.models", "must be a list of model names")
    budget = item.get("budget_usd")
    return KeySettings(
        name=name,
        secret=secret,
        team=_opt_str(item.get("team"), f"{path}.team"),
        budget_micros=None if budget is None else usd_to_micros(budget, f"{path}.budget_usd"),
        budget_window=window,
        requests_per_minute=_opt_count(
            item.get("requests_per_minute"), f"{path}.requests_per_minute"
        ),
        images_per_minute=_opt_count(item.get("images_per_minute"), f"{path}.images_per_minute"),
        models=None if models is None else tuple(models),
    )


def _global(budgets: dict[str, Any]) -> BudgetSpec | None:
    if "global_usd" not in budgets:
        return None
    window = budgets.get("global_window", "month")
    if window not in _WINDOWS:
        raise CostConfigError("budgets.global_window", f"must be one of {', '.join(_WINDOWS)}")
    return BudgetSpec(
        "global", "global", usd_to_micros(budgets["global_usd"], "budgets.global_usd"), window
    )


def _teams(raw: Any) -> tuple[BudgetSpec, ...]:
    if not isinstance(raw, dict):
        raise CostConfigError("budgets.teams", "must be a table of team = { usd, window }")
    out = []
    for team, table in raw.items():
        path = f"budgets.teams.{team}"
        if not isinstance(table, dict) or "usd" not in table:
            raise CostConfigError(path, 'must be { usd = <dollars>, window = "day|month|total" }')
        window = table.get("window", "month")
        if window not in _WINDOWS:
            raise CostConfigError(f"{path}.window", f"must be one of {', '.join(_WINDOWS)}")
        out.append(BudgetSpec("team", team, usd_to_micros(table["usd"], f"{path}.usd"), window))
    return tuple(out)


def _share(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise CostConfigError("budgets.pressure_share", "must be a share between 0 and 1")
    return float(value)


def _policy(table: dict[str, Any]) -> PolicySettings:
    patterns = table.get("deny_patterns", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise CostConfigError("policy.deny_patterns", "must be a list of regular expressions")
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CostConfigError(f"policy.deny_patterns[{i}]", f"bad expression: {exc}") from None
    safety = table.get("safety", "moderate")
    if safety not in ("strict", "moderate", "permissive"):
        raise CostConfigError("policy.safety", "must be strict, moderate or permissive")
    commercial = table.get("commercial_only", False)
    if not isinstance(commercial, bool):
        raise CostConfigError("policy.commercial_only", "must be true or false")
    return PolicySettings(tuple(patterns), commercial, safety)


def _opt_str(value: Any, path: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise CostConfigError(path, "must be a string")
    return value or None


def _opt_count(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CostConfigError(path, "must be a positive whole number")
    return value
