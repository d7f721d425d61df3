"""`proxy.config.load_settings`: one reader for every section, one `ConfigError` naming the
TOML path; the core's own types in the settings; shared mode's sections; a round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from policies.budget import BudgetSpec
from policies.circuit import Breaker
from proxy.config import (
    ConfigError,
    PostgresSettings,
    RedisSettings,
    S3Settings,
    Secret,
    Settings,
    StorageSettings,
    load_settings,
)
from tests.proxy.config_strategies import any_settings
from tests.proxy.config_toml import render_settings

SHARED = """
[storage]
backend = "shared"
[redis]
url = "redis://:pw-redis@127.0.0.1:6379/0"
[postgres]
dsn = "postgresql://postgres:pw-pg@127.0.0.1:5432/imagegate"
[s3]
endpoint_url = "http://127.0.0.1:9000"
bucket = "imagegate"
access_key_id = "${AWS_ACCESS_KEY_ID}"
secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ={} if environ is None else environ)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[nonsense]\n", "nonsense"),
        ("server = 1\n", "server"),
        ("[server]\nhots = 'x'\n", "server.hots"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nmax_body_mb = 0\n", "server.max_body_mb"),
        ("[storage]\nbackend = 'cloud'\n", "storage.backend"),
        ("[storage]\ndata_dir = 5\n", "storage.data_dir"),
        ("[cache]\nttl_seconds = 0\n", "cache.ttl_seconds"),
        ("[cache]\nshare_across_teams = 'yes'\n", "cache.share_across_teams"),
        ("[logging]\nlevel = 'loud'\n", "logging.level"),
        ("[logging]\nformat = 'xml'\n", "logging.format"),
        ("[logging]\nsample_hits = 2.0\n", "logging.sample_hits"),
        ("[defaults]\nmodel = 5\n", "defaults.model"),
        ("[uploads]\nurl_hosts = ['']\n", "uploads.url_hosts"),
        ("[routing]\nsubstitute = 'always'\n", "routing.substitute"),
        ("[routing]\nbreaker_failures = 0\n", "routing.breaker_failures"),
        ("[routing]\nmax_attempts = 1.5\n", "routing.max_attempts"),
        ("providers = 1\n", "providers"),
        ("[providers.acme]\nbase_url = 'x'\n", "providers.acme.kind"),
        ("[providers.openai]\ntimeout_seconds = 0\n", "providers.openai.timeout_seconds"),
        ("[providers.openai]\nrequests_per_minute = 0\n", "providers.openai.requests_per_minute"),
        ("[providers.replicate]\napi_token = 5\n", "providers.replicate.api_token"),
        ("[models.m]\nprovider = 'openai'\nfamily = 'nope'\n", "models.m.family"),
        ("[families.x]\nlike = 'virtual'\n", "families.x.like"),
        ("[auth]\nadmin_key = 5\n", "auth.admin_key"),
        ("[[keys]]\nname = 'web'\nkey = 'short'\n", "keys[0].key"),
        (
            "[[keys]]\nname = 'web'\nkey = '0123456789abcdef'\nbudget_usd = -1\n",
            "keys[0].budget_usd",
        ),
        ("[budgets]\nglobal_usd = 5\nglobal_window = 'week'\n", "budgets.global_window"),
        ("[budgets]\nteams = { g = { usd = 1, window = 'week' } }\n", "budgets.teams.g.window"),
        ("[policy]\nsafety = 'lax'\n", "policy.safety"),
        ("[redis]\nprefix = 1\n", "redis.prefix"),
        ("[postgres]\ndns = 'x'\n", "postgres.dns"),
        ("[s3]\nregion = []\n", "s3.region"),
    ],
)
def test_every_section_names_the_bad_path(tmp_path: Path, text: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{tmp_path / 'config.toml'}: {path}: ")


def test_a_typo_gets_the_nearest_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server.prot: unknown key; did you mean 'port'\?"):
        load(tmp_path, "[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section; did you mean 'routing'\?"):
        load(tmp_path, "[routeing]\n")


def test_a_required_variable_names_the_key_that_wants_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[auth]\nadmin_key = "${ADMIN:?set the admin key}"\n')
    assert caught.value.path == "auth.admin_key"
    assert caught.value.problem == "$ADMIN is required: set the admin key"


def test_a_file_holds_only_what_it_changes(tmp_path: Path) -> None:
    got = load(tmp_path, "[server]\nport = 9000\n[routing]\nbreaker_failures = 5\n")
    defaults = load_settings(None, environ={})
    assert got.server == replace(defaults.server, port=9000)
    assert got.routing == replace(defaults.routing, breaker_failures=5)
    assert (got.cache, got.cost, got.storage, got.redis) == (
        defaults.cache,
        defaults.cost,
        defaults.storage,
        defaults.redis,
    )
    assert got.catalog.models.keys() == defaults.catalog.models.keys()


def test_settings_hold_the_cores_own_values(tmp_path: Path) -> None:
    got = load(
        tmp_path,
        "[routing]\nbreaker_failures = 4\nbreaker_cooldown_seconds = 9\n"
        "[budgets]\nglobal_usd = 2.5\nteams = { growth = { usd = 1 } }\n",
    )
    assert got.routing.breaker == Breaker(threshold=4, cooldown=9.0)
    assert got.cost.global_budget == BudgetSpec("global", "global", 2_500_000, "month")
    assert got.cost.team_budgets == (BudgetSpec("team", "growth", 1_000_000, "month"),)


def test_the_data_dir_variable_wins_over_the_file(tmp_path: Path) -> None:
    got = load(tmp_path, "[storage]\ndata_dir = 'a'\n", {"IMAGEGATE_DATA_DIR": "b"})
    assert got.data_dir == got.storage.data_dir == Path("b")
    assert load(tmp_path, "[storage]\ndata_dir = 'a'\n").data_dir == Path("a")


# -- shared mode ----------------------------------------------------------------------------
def test_shared_mode_reads_its_three_stores(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "pw-s3-secret"}
    got = load(tmp_path, SHARED, env)
    assert got.storage == StorageSettings(backend="shared")
    assert got.redis == RedisSettings(url=Secret("redis://:pw-redis@127.0.0.1:6379/0"))
    assert got.redis.prefix == "imagegate:"
    assert got.postgres.dsn.reveal().endswith("@127.0.0.1:5432/imagegate")
    assert got.s3 == S3Settings(
        endpoint_url="http://127.0.0.1:9000",
        bucket="imagegate",
        access_key_id=Secret("AKIA-test"),
        secret_access_key=Secret("pw-s3-secret"),
    )
    assert (got.s3.prefix, got.s3.region) == ("blobs/", "us-east-1")
    shown = repr(got) + str(got)
    for secret in ("pw-redis", "pw-pg", "pw-s3-secret", "AKIA-test"):
        assert secret not in shown


def test_the_defaults_are_embedded_with_empty_shared_sections() -> None:
    got = load_settings(None, environ={})
    assert got.storage.backend == "embedded" and got.storage.data_dir == Path(".imagegate")
    assert got.redis == RedisSettings() and got.postgres == PostgresSettings()
    assert not got.redis.url and got.s3.endpoint_url == ""


@pytest.mark.parametrize(
    ("drop", "path"),
    [
        ('url = "redis://:pw-redis@127.0.0.1:6379/0"\n', "redis.url"),
        ('dsn = "postgresql://postgres:pw-pg@127.0.0.1:5432/imagegate"\n', "postgres.dsn"),
        ('bucket = "imagegate"\n', "s3.bucket"),
    ],
)
def test_shared_mode_names_the_store_it_lacks(tmp_path: Path, drop: str, path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SHARED.replace(drop, ""))
    assert caught.value.path == path
    assert 'required when storage.backend = "shared"' in caught.value.problem


def test_embedded_mode_needs_no_shared_store(tmp_path: Path) -> None:
    assert (
        load(tmp_path, "[storage]\nbackend = 'embedded'\n[s3]\nregion = 'eu'\n").s3.region == "eu"
    )


# -- round trip -----------------------------------------------------------------------------
@given(any_settings())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_settings_written_as_toml_read_back_equal(tmp_path_factory, wanted) -> None:
    path = tmp_path_factory.mktemp("round") / "config.toml"
    path.write_text(render_settings(wanted), encoding="utf-8")
    got = load_settings(path, environ={})
    assert replace(got, catalog=wanted.catalog, source=wanted.source) == wanted


# -- the command ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "[storage]\nbackend = 'shared'\n",
            'redis.url: is required when storage.backend = "shared"',
        ),
        ("[budgets]\nteams = { g = { usd = 1, windw = 'day' } }\n", "budgets.teams.g.windw"),
    ],
)
def test_serve_with_a_bad_config_says_one_line_and_exits_non_zero(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", "bad.toml"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(root)},
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"imagegate: config error: bad.toml: {words}")
