from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.cache import (
    CacheDirectives,
    CacheOutcome,
    fresh_until,
    outcome_of,
    parse_cache_control,
    plan_lookup,
)
from policies.errors import InvalidRequest, NotCached
from policies.models import Entry


def entry(created: float) -> Entry:
    return Entry(
        blob="a" * 64,
        format="png",
        width=1,
        height=1,
        model="m",
        provider="p",
        cost_micros=0,
        created=created,
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CacheDirectives()),
        ("no-cache", CacheDirectives(no_cache=True)),
        ("No-Store, only-if-cached", CacheDirectives(no_store=True, only_if_cached=True)),
        ("max-age=60", CacheDirectives(max_age=60)),
        ('max-age="5", private', CacheDirectives(max_age=5)),
        ("max-age=60, max-age=10", CacheDirectives(max_age=10)),
    ],
)
def test_parse_cache_control(header, expected):
    assert parse_cache_control(header) == expected


@pytest.mark.parametrize("header", ["max-age=-1", "max-age=abc", "max-age=", "max-age=1e3"])
def test_bad_max_age_is_a_400(header):
    with pytest.raises(InvalidRequest):
        parse_cache_control(header)


def test_plan_splits_cached_and_missing():
    plan = plan_lookup([entry(0), None, entry(0)], CacheDirectives(), now=10)
    assert sorted(plan.cached) == [0, 2] and plan.missing == (1,)
    assert outcome_of(plan, CacheDirectives(), generated=1, coalesced=0) is CacheOutcome.PARTIAL


def test_max_age_drops_old_entries():
    plan = plan_lookup([entry(0), entry(95)], CacheDirectives(max_age=10), now=100)
    assert list(plan.cached) == [1] and plan.missing == (0,)


def test_only_if_cached_never_spends():
    with pytest.raises(NotCached) as info:
        plan_lookup([entry(0), None], CacheDirectives(only_if_cached=True), now=0)
    assert info.value.status_hint == 504


def test_outcomes():
    hit = plan_lookup([entry(0)], CacheDirectives(), now=0)
    miss = plan_lookup([None], CacheDirectives(), now=0)
    assert outcome_of(hit, CacheDirectives(), generated=0, coalesced=0) is CacheOutcome.HIT
    assert outcome_of(miss, CacheDirectives(), generated=1, coalesced=0) is CacheOutcome.MISS
    assert outcome_of(miss, CacheDirectives(), generated=0, coalesced=1) is CacheOutcome.COALESCED
    bypass = CacheDirectives(no_cache=True)
    plan = plan_lookup([entry(0)], bypass, now=0)
    assert plan.missing == (0,)
    assert outcome_of(plan, bypass, generated=1, coalesced=0) is CacheOutcome.BYPASS


def test_a_miss_that_generated_is_a_miss_even_when_it_also_joined():
    """n=2, nothing cached: one index joined a flight in progress, the other was generated
    here (paid for): that is a MISS, not COALESCED (the call was not free)."""
    plan = plan_lookup([None, None], CacheDirectives(), now=0)
    assert outcome_of(plan, CacheDirectives(), generated=1, coalesced=1) is CacheOutcome.MISS
    assert outcome_of(plan, CacheDirectives(), generated=0, coalesced=2) is CacheOutcome.COALESCED


@given(
    st.lists(st.one_of(st.none(), st.floats(0, 1000)), min_size=1, max_size=10),
    st.one_of(st.none(), st.integers(0, 1000)),
)
def test_every_index_is_either_cached_or_missing(created, max_age):
    found = [None if c is None else entry(c) for c in created]
    plan = plan_lookup(found, CacheDirectives(max_age=max_age), now=1000)
    assert sorted([*plan.cached, *plan.missing]) == list(range(len(found)))


def test_ttl_and_max_age_take_the_stricter():
    found = [entry(0), entry(50), entry(90)]
    plan = plan_lookup(found, CacheDirectives(max_age=60), now=100, ttl=30)
    assert list(plan.cached) == [2]
    plan = plan_lookup(found, CacheDirectives(), now=100, ttl=60)
    assert list(plan.cached) == [1, 2]


def test_fresh_until_is_the_oldest_entry_plus_the_ttl():
    assert fresh_until([entry(100.0), entry(40.0)], 60.0) == 100.0
    assert fresh_until([entry(100.0)], None) == float("inf")
    assert fresh_until([], 60.0) == float("inf")


@given(
    st.lists(st.floats(0, 1e9), min_size=1, max_size=4),
    st.floats(1, 1e6),
    st.floats(0, 2e9),
)
def test_fresh_until_agrees_with_plan_lookup(created, ttl, now):
    """A kept answer is served exactly while a lookup would still find every entry usable."""
    entries = [entry(c) for c in created]
    plan = plan_lookup(entries, CacheDirectives(), now=now, ttl=ttl)
    assert (now <= fresh_until(entries, ttl)) == (not plan.missing)
