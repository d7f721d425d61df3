"""Hits counted into one row per repeat and flush: totals stay exact, rows stay few."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.accounts import Accounts
from proxy.config_cost import parse_cost
from proxy.hit_tally import HitTally
from proxy.observability.events import Events
from proxy.observability.hooks import MetricsHook
from proxy.observability.metrics import Metrics
from proxy.stores.embedded import SqliteLedgerPort
from proxy.stores.hit_rows import HitRowWriter
from proxy.stores.ledger import FREE_ROW_INSERT, SqliteLedger, row_values

KEY_A, KEY_B = "a" * 64, "b" * 64


def test_repeats_share_a_row_with_summed_images_and_savings():
    tally = HitTally()
    tally.add(10.0, "web", "growth", KEY_A, "m", "openai", 2, 80_000, "HIT", "req_1")
    tally.add(10.5, "web", "growth", KEY_A, "m", "openai", 2, 80_000, "HIT", "req_2")
    tally.add(11.0, "web", "growth", KEY_B, "m", "openai", 1, 40_000, "HIT", "req_3")
    tally.add(11.0, "ci", None, KEY_A, "m", "openai", 2, 80_000, "HIT", "req_4")
    tally.add(11.0, "web", "growth", KEY_A, "m", "openai", 2, 80_000, "COALESCED", "req_5")
    assert len(tally) == 4
    rows = [row_values(r) for r in tally.take()]
    assert rows == [  # in `row_values` order; ts and request id of each group's first hit
        (10.0, "web", "growth", KEY_A, "m", "openai", 4, 0, 160_000, "HIT", "req_1", 2),
        (11.0, "web", "growth", KEY_B, "m", "openai", 1, 0, 40_000, "HIT", "req_3", 1),
        (11.0, "ci", None, KEY_A, "m", "openai", 2, 0, 80_000, "HIT", "req_4", 1),
        (11.0, "web", "growth", KEY_A, "m", "openai", 2, 0, 80_000, "COALESCED", "req_5", 1),
    ]
    assert len(tally) == 0 and tally.take() == []


hits = st.lists(
    st.tuples(
        st.sampled_from(["web", "ci", None]),
        st.sampled_from([KEY_A, KEY_B]),
        st.sampled_from(["HIT", "COALESCED"]),
        st.integers(1, 4),
        st.integers(0, 200_000),
    ),
    max_size=60,
)


@given(hits)
def test_counted_rows_add_up_to_the_hits(recorded):
    """However hits group, the rows' requests, images and savings sum to the hits' own."""
    tally = HitTally()
    for i, (key_name, request_key, cache, images, saved) in enumerate(recorded):
        tally.add(float(i), key_name, None, request_key, "m", "p", images, saved, cache, f"r{i}")
    rows = tally.take()
    assert sum(r.requests for r in rows) == len(recorded)
    assert sum(r.images for r in rows) == sum(h[3] for h in recorded)
    assert sum(r.saved_micros for r in rows) == sum(h[4] for h in recorded)
    assert len({(r.key_name, r.request_key, r.cache) for r in rows}) == len(rows)  # per group
    assert all(r.cost_micros == 0 for r in rows)


def test_counted_rows_are_counted_as_requests_by_the_ledger(tmp_path):
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    try:
        tally = HitTally()
        for i in range(5):
            tally.add(100.0 + i, "web", "growth", KEY_A, "m", "openai", 1, 3_000, "HIT", f"r{i}")
        ledger.record_many(tally.take())
        ledger.record_free(
            [(105.0, "web", "growth", KEY_B, "m", "openai", 1, 0, 0, "MISS", "r9", 1)]
        )
        assert ledger.hit_ratio() == 5 / 6
        (by_key,) = ledger.spend_by("key")
        assert (by_key["hits"], by_key["misses"], by_key["images"]) == (5, 1, 6)
        assert by_key["saved_micros"] == 15_000
        newest = ledger.rows(limit=2)
        assert [(r.cache, r.requests) for r in newest] == [("MISS", 1), ("HIT", 5)]
    finally:
        ledger.close()


OLD_LEDGER = """
CREATE TABLE ledger (
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, key_name TEXT, team TEXT, request_key TEXT,
  model TEXT, provider TEXT, images INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  saved_micros INTEGER NOT NULL, cache TEXT, request_id TEXT, reservation TEXT UNIQUE);
INSERT INTO ledger VALUES (1, 1.0, 'web', NULL, 'k', 'm', 'openai', 1, 40000, 0, 'MISS', 'r1', 'x');
INSERT INTO ledger VALUES (2, 2.0, 'web', NULL, 'k', 'm', 'openai', 1, 0, 40000, 'HIT', 'r2', NULL);
"""


def test_a_ledger_from_before_counted_rows_is_upgraded_in_place(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_LEDGER)
    ledger = SqliteLedger(path)
    try:
        assert [(r.request_id, r.requests) for r in ledger.rows()] == [("r2", 1), ("r1", 1)]
        assert ledger.hit_ratio() == 0.5
        assert ledger.total_spend() == 40_000
        ledger.record_free([(3.0, "web", None, "k", "m", "openai", 2, 0, 80_000, "HIT", "r3", 2)])
        assert ledger.hit_ratio() == 0.75
    finally:
        ledger.close()
    again = SqliteLedger(path)  # opening an upgraded ledger again changes nothing
    assert len(again.rows()) == 3
    again.close()


def test_the_insert_names_every_column_it_fills():
    assert FREE_ROW_INSERT.count("?") == 12  # row_values: 11 columns and requests


async def test_a_failed_flush_keeps_its_rows_for_the_next(tmp_path):
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    metrics, writer = Metrics(), HitRowWriter(ledger.path)  # the gateway's loop writer
    port = SqliteLedgerPort(ledger, hit_rows=writer)
    gate = Accounts(port, parse_cost({}), Events([MetricsHook(metrics)]), lambda: 100.0)
    admin = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        gate.hits.add(100.0, None, None, KEY_A, "m", "p", 1, 5, "HIT", "r1")
        # A real failure of the insert (as a full disk would make it), not a patched writer.
        admin.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        with pytest.raises(sqlite3.IntegrityError):
            await gate.flush_hits()
        assert ledger.rows() == []
        admin.execute("DROP TRIGGER refuse")
        gate.hits.add(101.0, None, None, KEY_A, "m", "p", 1, 5, "HIT", "r2")
        await gate.flush_hits()  # the kept row first, then the new tally
        saved = metrics.registry.get_sample_value(
            "imagegate_saved_usd_total", {"key": "", "team": "", "model": "m"}
        )
        assert saved == pytest.approx(10 / 1_000_000)  # each hit's $0.000005 counted once
        assert [(r.ts, r.request_id, r.requests) for r in ledger.rows()] == [
            (101.0, "r2", 1),
            (100.0, "r1", 1),
        ]
    finally:
        admin.close()
        writer.close()
        ledger.close()
