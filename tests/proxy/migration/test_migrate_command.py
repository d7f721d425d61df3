"""`imagegate migrate` as a user runs it: two configurations with their own data
directories, a real process, a gateway on the target serving what the source cached."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import diskcache
import openai
import pytest

from policies.abtest import Variant
from policies.budget import BudgetSpec
from policies.ledger_models import KeyRecord, LedgerRow
from policies.models import Entry
from proxy.config import load_settings
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.experiments import Experiment, ExperimentStore, ImageVariant
from proxy.stores.ledger import SqliteLedger
from tests.conftest import CountingProvider, ManualClock, start_gateway

ROOT = Path(__file__).resolve().parents[3]
SECRET = "sk-migrated-web-key-0123456789"
NOW = 1_800_000_000.0
ROW = re.compile(r"^\W\s*([A-Za-z/ ,()-]+?)\s+\W\s+(\d+)\s+\W\s+(\d+)\s+\W\s+(.+?)\s+\W$")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEGATE_", "OPENAI_"))}
    # A data directory in the environment must not be used by either side.
    decoy = str(tmp_path / "decoy")
    return {**clean, "PYTHONPATH": str(ROOT), "IMAGEGATE_DATA_DIR": decoy, "COLUMNS": "160"}


def _config(tmp: Path, name: str, data: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f'[storage]\ndata_dir = "{data}"\n')
    return path


def migrate(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "migrate", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def summary(stdout: str) -> dict[str, tuple[int, int, str]]:
    """store -> (copied, already there, not copied) from the summary table."""
    found = {}
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match and match[1] != "store":
            found[match[1]] = (int(match[2]), int(match[3]), match[4])
    return found


def _fill_ledger(path: Path) -> None:
    """Spend with refunds, hits, an open key budget and a held model."""
    ledger = SqliteLedger(path)
    ledger.create_key(KeyRecord("web", "red", NOW, budget_micros=900_000), SECRET)
    ledger.create_key(KeyRecord("old", None, NOW, revoked=NOW + 5), "sk-revoked-key-000000")
    rows = [LedgerRow(NOW - 86_400 * (i % 40), "web", "red", f"k{i}", "flux", "replicate", 1,
                      1000 * (i % 7), 0, "MISS", f"req-{i}") for i in range(300)]  # fmt: skip
    rows += [LedgerRow(NOW, "web", "red", "k", "flux", "replicate", 2, 0, 500, "HIT")] * 3
    ledger.record_many(rows)
    budget = [BudgetSpec("global", "", 10**9, "day")]
    reservation = ledger.reserve(budget, 40_000, NOW, "gone-host:1:1")
    assert isinstance(reservation, str)
    orphan = ledger.abandon(reservation)
    assert orphan is not None
    (orphan_id,) = [o["id"] for o in ledger.orphans()]
    ledger.refund(int(str(orphan_id)))
    ledger.hold_model("flux", "upstream billing dispute", NOW)
    ledger.close()


def _fill_experiments(path: Path) -> None:
    store = ExperimentStore(path)
    variants = (
        ImageVariant(Variant("a", 1, True, "A"), "a" * 64, "png"),
        ImageVariant(Variant("b", 1, False, "B"), "b" * 64, "png"),
    )
    store.create(Experiment("hero", NOW, variants), {"a" * 64: b"AAAA", "b" * 64: b"BBBB"})
    for n in range(20):
        store.record_impression("hero", f"s{n}", "ab"[n % 2], NOW + n)
        if n % 3 == 0:
            store.record_conversion("hero", f"s{n}", NOW + 100 + n)
    store.close()


def _ledger_view(path: Path) -> dict[str, object]:
    ledger = SqliteLedger(path)
    budgets = [BudgetSpec(s, n, 10**9, w) for s, n in (("global", ""), ("team", "red"),
               ("key", "web")) for w in ("day", "month", "total")]  # fmt: skip
    view = {
        **{g: ledger.spend_by(g) for g in ("key", "team", "model", "day")},  # type: ignore[arg-type]
        "totals": ledger.money_totals(),
        "hit_ratio": ledger.hit_ratio(),
        "budgets": ledger.budget_left(budgets, NOW),
        "rows": sorted(ledger.rows(limit=10_000), key=repr),
        "keys": ledger.list_keys(),
        "holds": ledger.holds(),
        "open": ledger.open_reservations(),
    }
    ledger.close()
    return view


def _experiment_view(path: Path) -> tuple[object, ...]:
    store = ExperimentStore(path)
    view = (
        store.experiments(),
        store.counts("hero"),
        store.image("a" * 64),
        store.seen("hero", "s4"),
    )
    store.close()
    return view


async def _ask(base_url: str, key: str) -> tuple[str, str]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as client:
        raw = await client.images.with_raw_response.generate(
            model="gpt-image-1-mini", prompt="a paper crane", size="1024x1024"
        )
        return raw.headers["x-cache"], raw.parse().data[0].b64_json or ""


async def test_migrate_keeps_cache_keys_ledger_and_experiments(tmp_path, env):
    old = _config(tmp_path, "old", "old-data")
    new = _config(tmp_path, "new", "new-data")
    source = load_settings(old, {})
    source = replace(source, data_dir=tmp_path / source.data_dir)  # as the CLI's cwd sees it
    _fill_ledger(source.data_dir / "ledger.sqlite3")
    _fill_experiments(source.data_dir / "experiments.sqlite3")
    gw = await start_gateway(source, CountingProvider(), ManualClock())
    try:
        assert (await _ask(gw.base_url, SECRET))[0] == "MISS"
        outcome, image = await _ask(gw.base_url, SECRET)
        assert outcome == "HIT"
    finally:
        await gw.close()

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "decoy").exists()
    copied = summary(done.stdout)
    assert copied["API keys"][0] == 2 and copied["ledger rows"][0] == 300 + 3 + 1 + 2
    assert copied["blobs (images)"][0] == copied["cache entries"][0] == 1
    assert _ledger_view(tmp_path / "old-data/ledger.sqlite3") == _ledger_view(
        tmp_path / "new-data/ledger.sqlite3"
    )
    assert _experiment_view(tmp_path / "old-data/experiments.sqlite3") == _experiment_view(
        tmp_path / "new-data/experiments.sqlite3"
    )

    target = load_settings(new, {})
    target = replace(target, data_dir=tmp_path / target.data_dir)
    provider = CountingProvider()
    gw = await start_gateway(target, provider, ManualClock())
    try:
        assert await _ask(gw.base_url, SECRET) == ("HIT", image)
        assert provider.calls == []
        with pytest.raises(openai.AuthenticationError):
            await _ask(gw.base_url, "sk-revoked-key-000000")
    finally:
        await gw.close()

    again = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")
    assert again.returncode == 0, again.stderr
    rows = summary(again.stdout)
    assert len(rows) == 7 and all(copied == 0 for copied, _, _ in rows.values()), again.stdout
    assert rows["API keys"][1] == 2


def _fill_cache(data: Path, count: int) -> list[str]:
    blobs, entries = DiskBlobStore(data / "blobs"), DiskEntryStore(data / "entries")
    shas = []
    for n in range(count):
        sha = blobs.put(n.to_bytes(4, "big") * 256)
        entries.put(f"{n:064x}", 0, _entry(sha), ttl=None if n % 2 else 86_400.0)
        shas.append(sha)
    blobs.close()
    entries.close()
    return sorted(shas)


def _entry(sha: str) -> Entry:
    return Entry(sha, "png", 16, 16, "gpt-image-1-mini", "placeholder", 0, NOW, prompt="p")


def _cache_view(data: Path) -> tuple[list[tuple[str, bytes | None]], list[object]]:
    with diskcache.Cache(str(data / "blobs")) as index:
        keys = sorted(index.iterkeys())
    blobs, entries = DiskBlobStore(data / "blobs"), DiskEntryStore(data / "entries")
    view = ([(k, blobs.get(k)) for k in keys],
            [entries.get(f"{n:064x}", 0) for n in range(len(keys))])  # fmt: skip
    blobs.close()
    entries.close()
    return view


def test_a_killed_run_resumes_and_ends_equal(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    _fill_cache(tmp_path / "old-data", 1500)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "migrate", "--from", "old.toml", "--to", "new.toml"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("blobs (images): ") and not line.startswith("blobs (images): 0/"):
            break
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stderr.close()
    partial = len(_cache_view(tmp_path / "new-data")[0])
    assert 0 < partial < 1500

    resumed = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert resumed.returncode == 0, resumed.stderr
    blobs = summary(resumed.stdout)["blobs (images)"]
    assert blobs[0] + blobs[1] == 1500 and blobs[1] >= partial
    assert _cache_view(tmp_path / "old-data") == _cache_view(tmp_path / "new-data")
    last = summary(migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml").stdout)
    assert last["blobs (images)"][:2] == (0, 1500) and last["cache entries"][:2] == (0, 1500)


def test_a_dry_run_counts_and_writes_nothing(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    _fill_cache(tmp_path / "old-data", 5)
    _fill_ledger(tmp_path / "old-data/ledger.sqlite3")

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml", "--dry-run")

    assert done.returncode == 0, done.stderr
    counted = summary(done.stdout)
    assert counted["blobs (images)"][0] == counted["cache entries"][0] == 5
    assert counted["ledger rows"][0] == 300 + 3 + 1 and counted["API keys"][0] == 2
    assert _cache_view(tmp_path / "new-data") == ([], [])
    assert _ledger_view(tmp_path / "new-data/ledger.sqlite3")["rows"] == []


def test_open_reservations_refuse_unless_forced(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    ledger = SqliteLedger(tmp_path / "old-data/ledger.sqlite3")
    ledger.record_many([LedgerRow(NOW, None, None, "k", "m", "p", 1, 5, 0, "MISS")])
    assert isinstance(ledger.reserve([], 7, NOW, "host:1:1"), str)
    ledger.close()

    refused = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "--force" in refused.stderr
    assert "1 budget reservation(s) are open" in refused.stderr

    forced = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml", "--force")
    assert forced.returncode == 0, forced.stderr
    view = _ledger_view(tmp_path / "new-data/ledger.sqlite3")
    assert view["open"] == 0 and len(view["rows"]) == 1  # type: ignore[arg-type]
    assert "1 open reservation(s) were left in the source" in forced.stdout


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("data", "data", "same stores"),
        ("missing", "data", "does not exist"),
    ],
)
def test_refusals_are_one_line(tmp_path, env, old, new, says):
    (tmp_path / "data").mkdir()
    _config(tmp_path, "old", old)
    _config(tmp_path, "new", new)

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and says in done.stderr
    assert done.stderr.startswith("imagegate migrate: ")


def test_a_bad_config_is_named(tmp_path, env):
    _config(tmp_path, "old", "data")
    (tmp_path / "new.toml").write_text("[storage\n")

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 1
    assert "--to: config error" in done.stderr and done.stderr.count("\n") == 1


def test_config_keys_the_target_file_does_not_list_are_pointed_out(tmp_path, env):
    (tmp_path / "old-data").mkdir()
    key = '[[keys]]\nname = "web-app"\nkey = "sk-config-key-0123456789"\n'
    (tmp_path / "old.toml").write_text(f'[storage]\ndata_dir = "old-data"\n{key}')
    _config(tmp_path, "new", "new-data")

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 0, done.stderr
    assert "note: [[keys]] web-app are in --from's file and not in --to's" in done.stderr
    (tmp_path / "new.toml").write_text(f'[storage]\ndata_dir = "new-data"\n{key}')
    again = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")
    assert again.returncode == 0 and "note:" not in again.stderr


def test_a_row_edited_into_nonsense_is_reported_not_copied(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    path = tmp_path / "old-data/ledger.sqlite3"
    ledger = SqliteLedger(path)
    ledger.record_many([LedgerRow(NOW + n, None, None, "k", "m", "p", 1, 5, 0, "MISS")
                        for n in range(5)])  # fmt: skip
    ledger.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ledger SET cost_micros = -5 WHERE id = 2")

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 0, done.stderr
    assert summary(done.stdout)["ledger rows"] == (4, 0, "1 expired or unreadable in the source")


def test_a_target_that_cannot_be_opened_is_one_line(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    _fill_cache(tmp_path / "old-data", 2)
    (tmp_path / "new-data").write_text("a file where the data directory should be")

    done = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")

    assert done.returncode == 1
    assert done.stderr.startswith("imagegate migrate: ") and done.stderr.count("\n") == 1


def test_ctrl_c_says_how_to_resume(tmp_path, env):
    _config(tmp_path, "old", "old-data")
    _config(tmp_path, "new", "new-data")
    _fill_cache(tmp_path / "old-data", 1500)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "migrate", "--from", "old.toml", "--to", "new.toml"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("blobs (images): "):
            break
    proc.send_signal(signal.SIGINT)

    assert proc.wait(timeout=60) == 130
    assert proc.stderr.read().splitlines()[-1] == (
        "imagegate migrate: interrupted; what was copied is kept: run the same command again "
        "to resume"
    )
    proc.stderr.close()
    resumed = migrate(tmp_path, env, "--from", "old.toml", "--to", "new.toml")
    assert resumed.returncode == 0 and summary(resumed.stdout)["blobs (images)"][1] > 0
