"""Settings -> TOML text, from the same schema the reader uses: what an operator would write
for these settings (only what differs from the defaults). The round-trip property uses it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from policies.config_schema import fields_of
from policies.config_values import Secret, micros_to_usd
from proxy.config import Settings

__all__ = ["render_settings"]

_PLAIN = ("server", "cache", "logging", "uploads", "routing", "storage", "redis", "postgres", "s3")


def render_settings(settings: Settings) -> str:
    lines = [f"[defaults]\nmodel = {_value(settings.default_model)}"]
    for name in _PLAIN:
        lines.append(_section(name, table_of(getattr(settings, name))))
    for name, provider in settings.providers.items():
        lines.append(_section(f"providers.{_key(name)}", table_of(provider)))
    cost = settings.cost
    lines.append(_section("auth", {"admin_key": cost.admin_key} if cost.admin_key else {}))
    for key in cost.keys:
        lines.append(_section("keys", table_of(key), array=True))
    lines.append(_section("budgets", _budgets(settings)))
    lines.append(_section("policy", table_of(cost.policy)))
    return "\n".join(lines) + "\n"


def table_of(value: Any) -> dict[str, Any]:
    """A settings value as its TOML table: the keys whose value is not the default."""
    defaults = {f.name: f.default for f in dataclasses.fields(value)}
    table = {}
    for spec in fields_of(type(value)):
        got = getattr(value, spec.attr)
        if spec.rule.fixed or got is None or got == defaults[spec.attr]:
            continue
        table[spec.toml] = spec.rule.show(got) if spec.rule.show else got
    return table


def _budgets(settings: Settings) -> dict[str, Any]:
    cost, table = settings.cost, {}
    if cost.global_budget is not None:
        table["global_usd"] = micros_to_usd(cost.global_budget.limit_micros)
        table["global_window"] = cost.global_budget.window
    if cost.pressure_share is not None:
        table["pressure_share"] = cost.pressure_share
    teams = {
        b.name: {"usd": micros_to_usd(b.limit_micros), "window": b.window}
        for b in cost.team_budgets
    }
    if teams:
        table["teams"] = teams
    return table


def _section(name: str, table: dict[str, Any], *, array: bool = False) -> str:
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{_key(k)} = {_value(v)}" for k, v in table.items())])


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Secret):
        return _value(value.reveal())
    if isinstance(value, Path):
        return _value(str(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)
