"""The SQLite ledger: reservations, windows, scopes, orphans, processes, kill -9, keys."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.budget import BudgetSpec, Denied
from policies.errors import InvalidRequest
from policies.ledger_models import KeyRecord, LedgerRow
from proxy.stores.ledger import SqliteLedger, owner_alive, process_owner

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC).timestamp()
YESTERDAY = NOW - 86_400
ME = process_owner()
KEY_DAY = BudgetSpec("key", "web-app", 25_000_000, "day")
TEAM_DAY = BudgetSpec("team", "growth", 100_000, "day")
GLOBAL_DAY = BudgetSpec("global", "global", 150_000, "day")


def row(
    ts: float = NOW,
    *,
    key: str | None = "web-app",
    team: str | None = "growth",
    cost: int = 40_000,
    saved: int = 0,
    cache: str = "MISS",
    model: str = "gpt-image-1-mini",
    images: int = 1,
    request_id: str | None = None,
) -> LedgerRow:
    return LedgerRow(
        ts=ts,
        key_name=key,
        team=team,
        request_key="k" * 64,
        model=model,
        provider="openai",
        images=images,
        cost_micros=cost,
        saved_micros=saved,
        cache=cache,
        request_id=request_id,
    )


@pytest.fixture
def ledger(tmp_path):
    store = SqliteLedger(tmp_path / "ledger.sqlite3")
    yield store
    store.close()


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


# -- reservations ---------------------------------------------------------------------------


def test_reserve_settle_release_round_trip(ledger):
    first = ledger.reserve([KEY_DAY], 40_000, NOW, ME)
    second = ledger.reserve([KEY_DAY], 40_000, NOW, ME)
    assert isinstance(first, str)
    assert isinstance(second, str)
    assert ledger.open_reservations() == 2
    [usage] = ledger.budget_left([KEY_DAY], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (0, 80_000)

    ledger.settle(first, row(cost=30_000))  # cheaper than the worst-case quote
    ledger.release(second)

    [usage] = ledger.budget_left([KEY_DAY], NOW)
    assert (usage.spent_micros, usage.reserved_micros) == (30_000, 0)
    assert usage.left_micros == 25_000_000 - 30_000
    assert ledger.open_reservations() == 0
    assert ledger.total_spend() == 30_000


def test_settle_is_idempotent_and_records_even_after_release(ledger):
    reservation = ledger.reserve([KEY_DAY], 40_000, NOW, ME)
    assert isinstance(reservation, str)
    ledger.release(reservation)  # e.g. wrongly taken for an orphan

    ledger.settle(reservation, row())
    ledger.settle(reservation, row())  # a retried settle

    assert ledger.total_spend() == 40_000
    assert ledger.budget_left([KEY_DAY], NOW)[0].spent_micros == 40_000


def test_denial_names_budget_and_exact_dollars(ledger):
    ledger.record(row(cost=24_988_000))
    budgets = [BudgetSpec("global", "g", 10**9, "month"), KEY_DAY]

    denied = ledger.reserve(budgets, 40_000, NOW, ME)

    assert isinstance(denied, Denied)
    assert denied.usage.spec == KEY_DAY
    assert denied.error.message == (
        "Budget exceeded: key 'web-app' has $0.012 of $25 left this day "
        "(resets 2026-11-29T00:00:00Z); this request may cost up to $0.04."
    )
    assert ledger.open_reservations() == 0  # all or nothing: the global one was not held


def test_open_reservations_count_against_the_budget(ledger):
    budget = [BudgetSpec("key", "web-app", 100_000, "day")]
    assert isinstance(ledger.reserve(budget, 60_000, NOW, ME), str)

    denied = ledger.reserve(budget, 60_000, NOW, ME)

    assert isinstance(denied, Denied)
    assert "$0.04 of $0.1 left" in denied.error.message


def test_rows_from_yesterday_do_not_count_against_a_day_budget(ledger):
    ledger.record(row(YESTERDAY, cost=24_000_000))
    ledger.record(row(NOW, cost=1_000_000))
    month = BudgetSpec("key", "web-app", 30_000_000, "month")
    total = BudgetSpec("key", "web-app", 30_000_000, "total")

    day_usage, month_usage, total_usage = ledger.budget_left([KEY_DAY, month, total], NOW)

    assert day_usage.spent_micros == 1_000_000
    assert month_usage.spent_micros == 25_000_000
    assert total_usage.spent_micros == 25_000_000
    assert isinstance(ledger.reserve([KEY_DAY], 20_000_000, NOW, ME), str)
    assert isinstance(ledger.reserve([month], 5_000_001, NOW, ME), Denied)
    # The next day starts fresh (only the reservation made above is still open).
    assert ledger.budget_left([KEY_DAY], NOW + 86_400)[0].spent_micros == 0


def test_team_and_global_scopes(ledger):
    ledger.record(row(key="a", team="growth", cost=50_000))
    ledger.record(row(key="b", team="growth", cost=30_000))
    ledger.record(row(key="c", team="search", cost=60_000))
    ledger.record(row(key=None, team=None, cost=5_000))  # open gateway, no key

    team, glob, key_b = ledger.budget_left(
        [TEAM_DAY, GLOBAL_DAY, BudgetSpec("key", "b", 10**6, "day")], NOW
    )

    assert team.spent_micros == 80_000
    assert glob.spent_micros == 145_000
    assert key_b.spent_micros == 30_000
    # Key "a" has room of its own but its team does not: denied by the team budget.
    denied = ledger.reserve([BudgetSpec("key", "a", 10**6, "day"), TEAM_DAY], 30_000, NOW, ME)
    assert isinstance(denied, Denied)
    assert denied.usage.spec == TEAM_DAY
    # A reservation held on the team budget blocks another key of the same team.
    assert isinstance(ledger.reserve([TEAM_DAY], 20_000, NOW, ME), str)
    assert isinstance(ledger.reserve([TEAM_DAY], 1, NOW, ME), Denied)
    assert isinstance(ledger.reserve([GLOBAL_DAY], 5_001, NOW, ME), Denied)


def test_hits_are_recorded_free_and_reported(ledger):
    ledger.record(row(cost=40_000, cache="MISS", images=2))
    ledger.record(row(cost=0, saved=40_000, cache="HIT", images=2))
    ledger.record(row(YESTERDAY, key="x", team="other", cost=10_000, model="flux-schnell"))

    by_key = ledger.spend_by("key")
    by_day = ledger.spend_by("day")
    by_model = ledger.spend_by("model", since=NOW - 60)

    assert by_key == [
        {"key": "web-app", "spend_micros": 40_000, "saved_micros": 40_000, "images": 4,
         "hits": 1, "misses": 1, "over_quote_micros": 0, "orphaned": 0},
        {"key": "x", "spend_micros": 10_000, "saved_micros": 0, "images": 1,
         "hits": 0, "misses": 1, "over_quote_micros": 0, "orphaned": 0},
    ]  # fmt: skip
    assert [d["day"] for d in by_day] == ["2026-11-27", "2026-11-28"]
    assert by_model == [
        {"model": "gpt-image-1-mini", "spend_micros": 40_000, "saved_micros": 40_000,
         "images": 4, "hits": 1, "misses": 1, "over_quote_micros": 0, "orphaned": 0},
    ]  # fmt: skip
    assert ledger.spend_by("team")[0]["team"] == "growth"
    assert ledger.hit_ratio() == pytest.approx(1 / 3)
    assert ledger.hit_ratio(since=NOW) == 0.5
    assert ledger.hit_ratio(since=NOW + 1) is None
    assert ledger.budget_left([KEY_DAY], NOW)[0].spent_micros == 40_000
    newest = ledger.rows(limit=2)
    assert [r.ts for r in newest] == [YESTERDAY, NOW]
    assert ledger.rows(limit=5, offset=2) == [row(cost=40_000, cache="MISS", images=2)]


def test_threads_share_one_ledger(ledger):
    budget = [BudgetSpec("global", "g", 400_000, "day")]
    wins: list[str] = []

    def worker() -> None:
        for _ in range(10):
            reservation = ledger.reserve(budget, 40_000, NOW, ME)
            if isinstance(reservation, str):
                wins.append(reservation)
                ledger.settle(reservation, row())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(wins) == 10
    assert ledger.total_spend() == 400_000


# -- orphans --------------------------------------------------------------------------------


def test_orphans_of_dead_processes_are_settled_at_their_quote_live_ones_kept(ledger):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    dead_pid = int(gone.stdout)
    dead = f"{socket.gethostname()}:{dead_pid}:123"
    reused = f"{socket.gethostname()}:{os.getpid()}:1"  # our pid, another start time
    elsewhere = f"some-other-host:{dead_pid}:123"
    live_child = spawn(
        """
        import sys
        from proxy.stores.ledger import process_owner
        print(process_owner(), flush=True)
        sys.stdin.read()
        """
    )
    try:
        assert live_child.stdout is not None
        live = live_child.stdout.readline().strip()
        for owner in (dead, reused, elsewhere, live, ME):
            draft = row(cost=1_000, request_id=f"req-{owner}")
            assert isinstance(ledger.reserve([KEY_DAY], 1_000, NOW, owner, draft), str)
        assert not owner_alive(dead)
        assert not owner_alive(reused)
        assert owner_alive(live)

        orphans = ledger.resolve_orphans(NOW + 1, lease=40)

        assert {o.request_id for o in orphans} == {f"req-{dead}", f"req-{reused}"}
        assert ledger.open_reservations() == 3
    finally:
        live_child.communicate("")
    assert len(ledger.resolve_orphans(NOW + 2, lease=40)) == 1  # the child is gone now
    # The other host's owner never sent a heartbeat: its reservation's age is the lease.
    assert ledger.resolve_orphans(NOW + 40, lease=40) == []
    assert [o.request_id for o in ledger.resolve_orphans(NOW + 41, lease=40)] == [
        f"req-{elsewhere}"
    ]
    assert ledger.open_reservations() == 1  # ours
    stored = [r for r in ledger.rows() if r.cache == "ORPHANED"]
    assert len(stored) == 4 and all(r.cost_micros == 1_000 and r.ts == NOW for r in stored)
    assert ledger.budget_left([KEY_DAY], NOW)[0].spent_micros == 4_000
    assert ledger.money_totals()["orphaned"] == 4


# -- processes ------------------------------------------------------------------------------

RESERVER = """
import sys
import time
from pathlib import Path
from policies.budget import BudgetSpec
from policies.ledger_models import LedgerRow
from proxy.stores.ledger import SqliteLedger, process_owner

path, worker, now = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ledger = SqliteLedger(path)
budget = [BudgetSpec("global", "global", 2_000_000, "day")]
print("ready", flush=True)
sys.stdin.readline()
won = 0
for i in range(50):
    reservation = ledger.reserve(budget, 40_000, now, process_owner())
    if isinstance(reservation, str):
        time.sleep(0.002)  # the provider call, with the reservation held
        row = LedgerRow(now, "k" + worker, "t", "r" * 64, "m", "p", 1, 40_000, 0, "MISS",
                        f"{worker}-{i}")
        ledger.settle(reservation, row)
        won += 1
print(won, flush=True)
"""


def test_four_processes_never_overspend(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path).close()  # create the schema once, before the race
    children = [spawn(RESERVER, str(path), str(w), str(NOW)) for w in range(4)]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:  # start them together
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()

    won = [int(child.communicate(timeout=60)[0]) for child in children]

    assert all(child.returncode == 0 for child in children)
    assert sum(won) == 50
    ledger = SqliteLedger(path)
    assert ledger.total_spend() == 2_000_000
    assert ledger.open_reservations() == 0
    assert len(ledger.rows(limit=1000)) == 50
    budget = BudgetSpec("global", "global", 2_000_000, "day")
    assert ledger.budget_left([budget], NOW)[0].left_micros == 0
    ledger.close()


SETTLER = """
import sys
from pathlib import Path
from policies.ledger_models import LedgerRow
from proxy.stores.ledger import SqliteLedger, process_owner

path, now = Path(sys.argv[1]), float(sys.argv[2])
ledger = SqliteLedger(path)
held = ledger.reserve([], 1, now, process_owner())  # never settled: the orphan
print("held", flush=True)
for i in range(100_000):
    reservation = ledger.reserve([], 40_000, now, process_owner())
    ledger.settle(reservation, LedgerRow(now, "k", "t", "r" * 64, "m", "p", 1, 40_000, 0,
                                         "MISS", f"row-{i}"))
    print(f"row-{i}", flush=True)
"""


def test_kill_9_loses_no_settled_row_and_leaves_no_reservation(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path).close()
    child = spawn(SETTLER, str(path), str(NOW))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    reported = [child.stdout.readline().strip() for _ in range(40)]

    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    reported += rest.split()

    assert child.returncode == -signal.SIGKILL
    ledger = SqliteLedger(path)
    stored = {r.request_id for r in ledger.rows(limit=1_000_000)}
    assert set(reported) <= stored
    assert ledger.total_spend() == 40_000 * len(stored)
    everything = BudgetSpec("global", "global", 10**12, "total")
    assert ledger.budget_left([everything], NOW)[0].spent_micros == ledger.total_spend()
    assert len(ledger.resolve_orphans(NOW, lease=40)) >= 1  # the held one, maybe one in flight
    assert ledger.open_reservations() == 0
    ledger.close()


# -- keys -----------------------------------------------------------------------------------


def key(name: str = "web-app", **fields) -> KeyRecord:
    return KeyRecord(name=name, team=fields.pop("team", "growth"), created=NOW, **fields)


def test_key_found_by_secret_until_revoked(ledger, tmp_path):
    secret = "ig-" + "s3cr3t" * 8
    ledger.create_key(
        key(budget_micros=25_000_000, budget_window="day", requests_per_minute=120,
            images_per_minute=60, models=("auto", "flux-schnell")),
        secret,
    )  # fmt: skip

    found = ledger.find_key(secret)

    assert found == key(
        budget_micros=25_000_000, budget_window="day", requests_per_minute=120,
        images_per_minute=60, models=("auto", "flux-schnell"),
    )  # fmt: skip
    assert found.budget_spec() == KEY_DAY
    assert found.allows_model("auto")
    assert not found.allows_model("gpt-image-1")
    assert ledger.find_key("ig-wrong") is None
    assert ledger.revoke_key("web-app", now=NOW + 1)
    assert not ledger.revoke_key("web-app")
    assert ledger.find_key(secret) is None
    assert ledger.get_key("web-app").revoked == NOW + 1
    assert ledger.list_keys(include_revoked=False) == []
    ledger.close()
    assert secret.encode() not in (tmp_path / "ledger.sqlite3").read_bytes()


def test_list_keys_never_shows_secrets_or_hashes(ledger):
    secrets = {"alpha": "ig-" + "a" * 40, "beta": "ig-" + "b" * 40}
    for name, secret in secrets.items():
        ledger.create_key(key(name), secret)

    listed = ledger.list_keys()

    assert [k.name for k in listed] == ["alpha", "beta"]
    text = repr(listed)
    for secret in secrets.values():
        assert secret not in text
        assert secret[3:13] not in text
    assert all(len(part) < 64 for part in text.replace("'", " ").split())  # no sha256 hex


def test_duplicate_names_and_secrets_are_refused(ledger):
    ledger.create_key(key("a"), "ig-secret-one-xxxxxxxxxxxxxxxx")
    with pytest.raises(InvalidRequest, match="name already exists"):
        ledger.create_key(key("a"), "ig-secret-two-xxxxxxxxxxxxxxxx")
    with pytest.raises(InvalidRequest, match="secret already exists") as caught:
        ledger.create_key(key("b"), "ig-secret-one-xxxxxxxxxxxxxxxx")
    assert "ig-secret" not in caught.value.message
    with pytest.raises(InvalidRequest, match="empty"):
        ledger.create_key(key("c"), "")


def test_set_budget(ledger):
    ledger.create_key(key(), "ig-" + "x" * 40)

    assert ledger.set_budget("web-app", 5_000_000, "month")
    assert not ledger.set_budget("nobody", 1, "day")

    assert ledger.get_key("web-app").budget_spec() == BudgetSpec(
        "key", "web-app", 5_000_000, "month"
    )
    assert ledger.set_budget("web-app", None)
    assert ledger.get_key("web-app").budget_spec() is None
    with pytest.raises(InvalidRequest, match="budget_window"):
        ledger.set_budget("web-app", 1, "week")  # type: ignore[arg-type]


def test_config_keys_are_upserted_and_retired(ledger):
    ledger.upsert_config_key(key("cfg", requests_per_minute=10), "ig-old-secret-xxxxxxxxxxxx")
    ledger.revoke_key("cfg")
    ledger.upsert_config_key(
        key("cfg", team="search", requests_per_minute=20), "ig-new-secret-xxxxxxxxxxxx"
    )
    ledger.create_key(key("admin-made"), "ig-admin-secret-xxxxxxxxxx")

    found = ledger.find_key("ig-new-secret-xxxxxxxxxxxx")

    assert ledger.find_key("ig-old-secret-xxxxxxxxxxxx") is None
    assert found is not None
    assert (found.team, found.requests_per_minute, found.source) == ("search", 20, "config")
    assert ledger.retire_config_keys(keep=["other"], now=NOW) == 1
    assert ledger.find_key("ig-new-secret-xxxxxxxxxxxx") is None
    assert ledger.find_key("ig-admin-secret-xxxxxxxxxx") is not None  # not from config
