from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.errors import InvalidRequest, RateLimited
from policies.ratelimit import (
    Allowed,
    Bucket,
    Limited,
    Oversized,
    Rate,
    peek,
    take,
    take_all,
)

T0 = 1_800_000_000.0


def test_new_bucket_starts_full_and_takes():
    bucket, decision = take(None, Rate(60), T0)

    assert bucket == Bucket(59.0, T0)
    assert decision == Allowed(remaining=59, limit=60, reset_seconds=1.0)


def test_empty_bucket_is_limited_with_retry_after_and_headers():
    rate = Rate(per_minute=60, burst=2)
    bucket, _ = take(None, rate, T0, cost=2)

    bucket, decision = take(bucket, rate, T0 + 0.25)

    assert isinstance(decision, Limited)
    assert decision.retry_after == 0.75
    assert decision.limit == 60
    assert decision.remaining == 0
    assert decision.reset_seconds == pytest.approx(1.75)
    assert bucket.tokens == pytest.approx(0.25)
    error = decision.error()
    assert isinstance(error, RateLimited)
    assert error.retry_after == decision.retry_after
    assert error.code == "rate_limit_exceeded"


def test_waiting_retry_after_is_enough():
    rate = Rate(per_minute=7, burst=1)
    bucket, _ = take(None, rate, T0)
    _, limited = take(bucket, rate, T0 + 0.1)
    assert isinstance(limited, Limited)

    _, decision = take(bucket, rate, T0 + 0.1 + limited.retry_after)

    assert isinstance(decision, Allowed)


def test_refill_is_continuous_and_capped_at_burst():
    rate = Rate(per_minute=120, burst=10)
    bucket = Bucket(0.0, T0)
    assert peek(bucket, rate, T0 + 1.5, cost=3) == Allowed(0, 120, 5.0)
    refilled, _ = take(bucket, rate, T0 + 3600, cost=0)
    assert refilled.tokens == 10.0


def test_cost_above_burst_is_an_error_not_a_wait():
    bucket, decision = take(None, Rate(per_minute=4, unit="images"), T0, cost=10)

    assert isinstance(decision, Oversized)
    assert bucket.tokens == 4.0  # nothing taken
    assert isinstance(decision.error, InvalidRequest)
    assert decision.error.status_hint == 400
    assert "needs 10 images" in decision.error.message
    assert "at most 4" in decision.error.message


def test_clock_going_backwards_mints_nothing():
    rate = Rate(per_minute=60, burst=5)
    bucket = Bucket(0.0, T0)

    bucket, decision = take(bucket, rate, T0 - 3600)
    assert isinstance(decision, Limited)
    assert bucket == Bucket(0.0, T0)  # keeps its latest time
    bucket, decision = take(bucket, rate, T0 + 1)
    assert isinstance(decision, Allowed)
    assert bucket.tokens == pytest.approx(0.0)


def test_rate_validates():
    with pytest.raises(ValueError, match="per_minute"):
        Rate(0)
    with pytest.raises(ValueError, match="burst"):
        Rate(10, burst=0)
    with pytest.raises(ValueError, match=">= 0"):
        take(None, Rate(10), T0, cost=-1)


def test_take_all_is_all_or_nothing():
    requests, images = Rate(10), Rate(4, unit="images")
    full = Bucket(10.0, T0)
    almost_empty = Bucket(1.0, T0)

    buckets, decision = take_all([(full, requests, 1), (almost_empty, images, 3)], T0)

    assert isinstance(decision, Limited)
    assert buckets == (full, almost_empty)  # the request token was not taken
    buckets, decision = take_all([(full, requests, 1), (Bucket(4.0, T0), images, 3)], T0)
    assert decision == Allowed(remaining=1, limit=4, reset_seconds=45.0)
    assert buckets == (Bucket(9.0, T0), Bucket(1.0, T0))
    _, decision = take_all([(full, requests, 1), (None, images, 5)], T0)
    assert isinstance(decision, Oversized)
    with pytest.raises(ValueError, match="at least one"):
        take_all([], T0)


rates = st.builds(
    Rate,
    per_minute=st.integers(min_value=1, max_value=600),
    burst=st.one_of(st.none(), st.integers(min_value=1, max_value=50)),
)
steps = st.lists(
    st.tuples(
        st.floats(min_value=-5, max_value=30, allow_nan=False),  # clock step, may go back
        st.integers(min_value=0, max_value=12),  # cost
    ),
    max_size=60,
)


@given(rate=rates, steps=steps)
def test_tokens_stay_between_zero_and_burst(rate, steps):
    bucket: Bucket | None = None
    now = T0
    for step, cost in steps:
        now += step
        bucket, _ = take(bucket, rate, now, cost)
        assert 0.0 <= bucket.tokens <= rate.capacity


@given(rate=rates, steps=steps)
def test_allowed_cost_never_exceeds_burst_plus_refill(rate, steps):
    bucket: Bucket | None = None
    now = T0
    first: float | None = None  # the bucket is created (full) at the first take
    latest = T0
    allowed = 0
    for step, cost in steps:
        now += step
        first = now if first is None else first
        latest = max(latest, now)
        bucket, decision = take(bucket, rate, now, cost)
        if isinstance(decision, Allowed):
            allowed += cost
        else:
            assert decision_is_sound(decision, cost, rate)
    # Time only counts once: the clock going back and forth must not refill twice.
    elapsed = 0.0 if first is None else latest - first
    assert allowed <= rate.capacity + rate.per_second * elapsed + 1e-6 * (len(steps) + 1)


def decision_is_sound(decision, cost, rate):
    if isinstance(decision, Oversized):
        return cost > rate.capacity
    return decision.retry_after > 0 and decision.remaining < cost
