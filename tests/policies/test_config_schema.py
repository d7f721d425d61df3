"""`policies.config_schema`: a settings class is its table's schema; every problem is one
`ConfigError` with the TOML path and what would do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pytest

from policies.config_schema import ConfigError, did_you_mean, read_table, setting
from policies.config_values import Secret, usd_to_micros


def _even(value: int, path: str) -> None:
    if value % 2:
        raise ConfigError(path, "must be even")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str = setting(fixed=True)
    port: int = setting(8080, low=0, high=65535, problem="must be 0-65535")
    ratio: float = setting(0.5, above=0, high=1)
    mode: Literal["fast", "slow"] = "fast"
    on: bool = False
    hosts: tuple[str, ...] = ()
    limit: int | None = setting(None, low=1)
    token: Secret = setting(Secret(""), aliases=("api_token",), repr=False)
    pairs: int = setting(2, check=_even)
    usd: int | None = setting(None, toml="dollars", read=usd_to_micros)


@dataclass(frozen=True, slots=True)
class Needs:
    key: str = setting(problem="a secret of 16 characters")


def read(table: dict[str, Any]) -> Sample:
    return read_table(Sample, table, "sample", name="s")


def test_an_empty_table_is_the_defaults() -> None:
    assert read({}) == Sample(name="s")


def test_values_are_read_into_their_types() -> None:
    got = read(
        {
            "port": 0,
            "ratio": 1,
            "mode": "slow",
            "on": True,
            "hosts": ["a", "b"],
            "limit": 3,
            "api_token": "t" * 20,
            "pairs": 4,
            "dollars": 2.5,
        }
    )
    assert got.ratio == 1.0 and isinstance(got.ratio, float)
    assert got.hosts == ("a", "b") and got.token == Secret("t" * 20)
    assert got.usd == 2_500_000 and got.mode == "slow" and got.on is True


@pytest.mark.parametrize(
    ("table", "path", "words"),
    [
        ({"port": "80"}, "sample.port", "expected a whole number, got '80'"),
        ({"port": True}, "sample.port", "expected a whole number"),
        ({"port": 70000}, "sample.port", "must be 0-65535, got 70000"),
        ({"ratio": 0}, "sample.ratio", "must be more than 0 and at most 1"),
        ({"ratio": float("nan")}, "sample.ratio", "expected a number"),
        ({"mode": "medium"}, "sample.mode", "expected one of fast, slow, got 'medium'"),
        ({"on": "yes"}, "sample.on", "expected true or false"),
        ({"on": 1}, "sample.on", "expected true or false"),
        ({"hosts": "a"}, "sample.hosts", "expected a list of strings"),
        ({"hosts": ["a", 1]}, "sample.hosts", "expected a list of strings"),
        ({"limit": 0}, "sample.limit", "must be at least 1"),
        ({"token": 5}, "sample.token", "expected a string, got a whole number"),
        ({"pairs": 3}, "sample.pairs", "must be even"),
        ({"dollars": -1}, "sample.dollars", ">= 0"),
        ({"prot": 1}, "sample.prot", "unknown key; did you mean 'port'?"),
        ({"zzz": 1}, "sample.zzz", "unknown key; known: port, ratio, mode"),
        ({"name": "x"}, "sample.name", "unknown key"),  # a fixed field is not a key
        ({"token": "a" * 20, "api_token": "b" * 20}, "sample.api_token", "not both"),
    ],
)
def test_a_bad_value_names_its_path_and_the_fix(
    table: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read(table)
    assert caught.value.path == path
    assert words in caught.value.problem


def test_an_alias_left_empty_gives_way_to_the_other_name() -> None:
    assert read({"token": "", "api_token": "b" * 20}).token == Secret("b" * 20)


def test_a_table_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"must be a table \(\[sample\]\)") as caught:
        read_table(Sample, [1], "sample", name="s")
    assert caught.value.path == "sample"


def test_a_required_key_says_what_it_wants() -> None:
    with pytest.raises(ConfigError) as caught:
        read_table(Needs, {}, "keys[0]")
    assert caught.value.path == "keys[0].key"
    assert caught.value.problem == "is required: a secret of 16 characters"


def test_the_message_names_file_path_and_problem() -> None:
    error = ConfigError("server.port", "must be 0-65535").within("gateway.toml")
    assert str(error) == "gateway.toml: server.port: must be 0-65535"
    assert error.source == "gateway.toml" and error.path == "server.port"
    assert str(ConfigError("", "file not found", source="x.toml")) == "x.toml: file not found"


def test_a_long_wrong_value_is_not_echoed_whole() -> None:
    with pytest.raises(ConfigError) as caught:
        read({"mode": "s" * 100})
    assert "s" * 50 not in str(caught.value) and "a string of" in str(caught.value)


def test_did_you_mean() -> None:
    assert did_you_mean("hots", ["host", "port"]) == "; did you mean 'host'?"
    assert did_you_mean("xyz", ["host", "port"]) == "; known: host, port"


def test_a_secret_never_shows() -> None:
    sample = read({"token": "sk-" + "x" * 30})
    assert "xxxx" not in repr(sample) and "xxxx" not in str(Secret("sk-" + "x" * 30))
    assert repr(Secret("")) == "Secret('')" and not Secret("")
