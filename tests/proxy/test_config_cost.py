"""`proxy.config_cost.parse_cost`: `[auth]`, `[[keys]]`, `[budgets]`, `[policy]`; every
malformed value is refused with its TOML path, as the one `ConfigError`."""

from __future__ import annotations

from typing import Any

import pytest

from policies.config_schema import ConfigError
from policies.config_values import usd_to_micros
from proxy.config_cost import CostConfigError, KeySettings, parse_cost

SECRET = "k" * 16


def key(**changes: Any) -> dict[str, Any]:
    return {"name": "web", "key": SECRET, **changes}


def test_a_full_config_parses() -> None:
    cost = parse_cost(
        {
            "auth": {"admin_key": "a" * 20},
            "keys": [key(team="growth", budget_usd=25.5, budget_window="month", models=["auto"])],
            "budgets": {
                "global_usd": 500,
                "global_window": "total",
                "pressure_share": 0.8,
                "teams": {"growth": {"usd": 100.0, "window": "day"}},
            },
            "policy": {"deny_patterns": [r"(?i)\bdeepfake\b"], "safety": "strict"},
        }
    )
    [web] = cost.keys
    assert web.budget_micros == 25_500_000 and web.models == ("auto",) and web.team == "growth"
    assert cost.global_budget is not None and cost.global_budget.limit_micros == 500_000_000
    assert [b.name for b in cost.team_budgets] == ["growth"]
    assert cost.pressure_share == 0.8 and cost.policy.safety == "strict"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"auth": []}, "auth"),
        ({"auth": {"admin": "x"}}, "auth.admin"),
        ({"auth": {"admin_key": 5}}, "auth.admin_key"),
        ({"keys": {"name": "web"}}, "keys"),
        ({"keys": ["web"]}, "keys[0]"),
        ({"keys": [key(colour="red")]}, "keys[0].colour"),
        ({"keys": [key(name="")]}, "keys[0].name"),
        ({"keys": [key(key="short")]}, "keys[0].key"),
        ({"keys": [key(budget_window="week")]}, "keys[0].budget_window"),
        ({"keys": [key(models="auto")]}, "keys[0].models"),
        ({"keys": [key(team=5)]}, "keys[0].team"),
        ({"keys": [key(requests_per_minute=0)]}, "keys[0].requests_per_minute"),
        ({"keys": [key(images_per_minute=True)]}, "keys[0].images_per_minute"),
        ({"keys": [key(budget_usd="5")]}, "keys[0].budget_usd"),
        ({"keys": [key(), key(key="j" * 16)]}, "keys"),
        ({"budgets": {"global_usd": 5, "global_window": "week"}}, "budgets.global_window"),
        ({"budgets": {"teams": []}}, "budgets.teams"),
        ({"budgets": {"teams": {"growth": {"window": "day"}}}}, "budgets.teams.growth"),
        ({"budgets": {"teams": {"g": {"usd": 1, "window": "week"}}}}, "budgets.teams.g.window"),
        ({"budgets": {"pressure_share": 1.5}}, "budgets.pressure_share"),
        ({"policy": {"deny_patterns": "x"}}, "policy.deny_patterns"),
        ({"policy": {"deny_patterns": ["("]}}, "policy.deny_patterns[0]"),
        ({"policy": {"safety": "lax"}}, "policy.safety"),
        ({"policy": {"commercial_only": "yes"}}, "policy.commercial_only"),
    ],
)
def test_malformed_values_name_their_path(raw: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cost(raw)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "as a number"),
        (float("nan"), "not a number"),
        (-1, ">= 0"),
        (0.0000001, "6 decimals"),
        (10**10, "at most"),
    ],
)
def test_dollars(value: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        usd_to_micros(value, "budgets.global_usd")
    assert usd_to_micros(0.000001, "x") == 1


def test_the_old_error_name_is_the_one_error() -> None:
    assert CostConfigError is ConfigError


def test_a_key_secret_never_shows() -> None:
    cost = parse_cost({"auth": {"admin_key": "adm-" + "z" * 20}, "keys": [key(key="s" * 20)]})
    assert "zzzz" not in repr(cost) and "ssss" not in repr(cost)
    assert cost.keys[0] == KeySettings(name="web", secret="s" * 20)  # the rest: defaults
