from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from policies.budget import (
    BudgetSpec,
    BudgetUsage,
    Charge,
    Denied,
    Fits,
    cap_charge,
    check_fit,
    format_reset,
    format_usd,
    pressure,
    window_bounds,
)
from policies.errors import BudgetExceeded

# 2026-11-28 15:30:00 UTC
NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC).timestamp()
KEY = BudgetSpec("key", "web-app", 25_000_000, "day")
TEAM = BudgetSpec("team", "growth", 100_000_000, "month")
GLOBAL = BudgetSpec("global", "global", 1_000_000_000, "total")


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0"),
        (40_000, "0.04"),
        (25_000_000, "25"),
        (1, "0.000001"),
        (12_000, "0.012"),
        (1_234_567_890, "1234.56789"),
        (-40_000, "-0.04"),
    ],
)
def test_format_usd_is_exact(micros, text):
    assert format_usd(micros) == text


def test_denial_names_budget_window_left_and_reset():
    usage = BudgetUsage(KEY, spent_micros=24_988_000, reserved_micros=0)

    decision = check_fit([usage], 40_000, NOW)

    assert isinstance(decision, Denied)
    assert decision.usage == usage
    assert isinstance(decision.error, BudgetExceeded)
    assert decision.error.message == (
        "Budget exceeded: key 'web-app' has $0.012 of $25 left this day "
        "(resets 2026-11-29T00:00:00Z); this request may cost up to $0.04."
    )
    assert decision.error.code == "insufficient_quota"
    assert decision.error.status_hint == 429


def test_denial_counts_reservations_and_names_the_first_budget_that_does_not_fit():
    usages = [
        BudgetUsage(GLOBAL, 0, 0),
        BudgetUsage(TEAM, 99_000_000, 990_000),  # $0.01 left
        BudgetUsage(BudgetSpec("key", "k", 1, "day"), 0, 1),  # also full, but later
    ]

    decision = check_fit(usages, 20_000, NOW)

    assert isinstance(decision, Denied)
    assert decision.usage.spec == TEAM
    assert decision.error.message == (
        "Budget exceeded: team 'growth' has $0.01 of $100 left this month "
        "(resets 2026-12-01T00:00:00Z); this request may cost up to $0.02."
    )


def test_total_window_never_resets_and_global_reads_well():
    decision = check_fit([BudgetUsage(GLOBAL, GLOBAL.limit_micros, 0)], 1, NOW)

    assert isinstance(decision, Denied)
    assert decision.error.message == (
        "Budget exceeded: the global budget has $0 of $1000 left in total (never resets); "
        "this request may cost up to $0.000001."
    )


def test_fit_reserves_on_every_budget():
    usages = [BudgetUsage(KEY, 1_000_000, 0), BudgetUsage(TEAM, 0, 500_000)]

    decision = check_fit(usages, 40_000, NOW)

    assert decision == Fits(
        (BudgetUsage(KEY, 1_000_000, 40_000), BudgetUsage(TEAM, 0, 540_000)), 40_000
    )


def test_exact_fit_is_allowed_and_one_micro_more_is_not():
    usage = BudgetUsage(KEY, 24_960_000, 0)
    assert isinstance(check_fit([usage], 40_000, NOW), Fits)
    assert isinstance(check_fit([usage], 40_001, NOW), Denied)


def test_no_budgets_always_fit_and_negative_amounts_are_refused():
    assert check_fit([], 10**12, NOW) == Fits((), 10**12)
    with pytest.raises(ValueError, match=">= 0"):
        check_fit([], -1, NOW)


def test_spec_validates():
    with pytest.raises(ValueError, match="window"):
        BudgetSpec("key", "k", 1, "week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope"):
        BudgetSpec("user", "k", 1, "day")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        BudgetSpec("key", "k", -1, "day")


def test_pressure_counts_spent_and_reserved():
    usage = BudgetUsage(KEY, 15_000_000, 5_000_000)  # 80% used
    assert pressure([usage], 0.8)
    assert not pressure([usage], 0.81)
    assert not pressure([], 0.0)
    assert pressure([BudgetUsage(BudgetSpec("key", "k", 0, "day"), 0, 0)], 0.9)


def test_window_bounds_examples():
    assert window_bounds("day", NOW) == (
        datetime(2026, 11, 28, tzinfo=UTC).timestamp(),
        datetime(2026, 11, 29, tzinfo=UTC).timestamp(),
    )
    assert window_bounds("month", NOW) == (
        datetime(2026, 11, 1, tzinfo=UTC).timestamp(),
        datetime(2026, 12, 1, tzinfo=UTC).timestamp(),
    )
    december = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC).timestamp()
    assert window_bounds("month", december)[1] == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert window_bounds("total", NOW) == (0.0, None)
    assert format_reset(None) == "never"


@given(
    now=st.floats(min_value=0, max_value=4_102_444_800),  # 1970 .. 2100
    window=st.sampled_from(["day", "month"]),
)
def test_window_bounds_contain_now_and_start_at_utc_midnight(now, window):
    start, end = window_bounds(window, now)

    assert end is not None
    assert start <= now < end
    first, reset = (datetime.fromtimestamp(t, tz=UTC) for t in (start, end))
    assert (first.hour, first.minute, first.second, first.microsecond) == (0, 0, 0, 0)
    assert (reset.hour, reset.minute, reset.second, reset.microsecond) == (0, 0, 0, 0)
    if window == "day":
        assert end - start == 86_400
    else:
        assert first.day == reset.day == 1
        assert (reset.year * 12 + reset.month) - (first.year * 12 + first.month) == 1


@given(now=st.floats(min_value=0, max_value=4_102_444_800))
def test_total_window_contains_everything(now):
    assert window_bounds("total", now) == (0.0, None)


SPECS = (
    BudgetSpec("global", "", 2_000_000, "total"),
    BudgetSpec("team", "growth", 700_000, "day"),
    BudgetSpec("key", "a", 300_000, "day"),
    BudgetSpec("key", "b", 0, "month"),
)


class BudgetModel(RuleBasedStateMachine):
    """The store as a dict: what a ledger does with `check_fit` and the usage transitions."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.usage = {spec: BudgetUsage(spec, 0, 0) for spec in SPECS}
        self.open: dict[int, tuple[int, tuple[BudgetSpec, ...]]] = {}
        self.counter = 0

    @rule(
        target=reservations,
        amount=st.integers(min_value=0, max_value=800_000),
        specs=st.sets(st.sampled_from(SPECS), max_size=len(SPECS)),
    )
    def reserve(self, amount, specs):
        chosen = tuple(sorted(specs, key=SPECS.index))
        before = {s: self.usage[s] for s in chosen}
        decision = check_fit([self.usage[s] for s in chosen], amount, 0.0)
        if isinstance(decision, Denied):
            assert decision.usage.spec in chosen
            assert decision.usage.used_micros + amount > decision.usage.spec.limit_micros
            assert str(decision.error).startswith("Budget exceeded: ")
            return None
        for spec, after in zip(chosen, decision.usages, strict=True):
            assert after.reserved_micros == before[spec].reserved_micros + amount
            self.usage[spec] = after
        self.counter += 1
        self.open[self.counter] = (amount, chosen)
        return self.counter

    @precondition(lambda self: bool(self.open))
    @rule(
        reservation=consumes(reservations),
        reported=st.one_of(
            st.integers(min_value=0, max_value=800_000), st.integers(min_value=0, max_value=10**15)
        ),
    )
    def settle(self, reservation, reported):
        """Whatever the upstream reported: the budget is charged at most the reservation."""
        if reservation not in self.open:
            return
        amount, chosen = self.open.pop(reservation)
        charge = cap_charge(amount, reported)
        assert charge.charged_micros <= amount
        assert charge.reported_micros == reported
        for spec in chosen:
            self.usage[spec] = self.usage[spec].settle(amount, charge.charged_micros)

    @precondition(lambda self: bool(self.open))
    @rule(reservation=consumes(reservations))
    def release(self, reservation):
        if reservation not in self.open:
            return
        amount, chosen = self.open.pop(reservation)
        for spec in chosen:
            before = self.usage[spec]
            self.usage[spec] = before.release(amount)
            assert before.reserved_micros - self.usage[spec].reserved_micros == amount

    @invariant()
    def never_overspent_never_negative(self):
        for spec, usage in self.usage.items():
            assert usage.spent_micros >= 0
            assert usage.reserved_micros >= 0
            assert usage.used_micros <= spec.limit_micros
            assert 0 <= usage.left_micros <= spec.limit_micros

    @invariant()
    def reserved_is_exactly_what_is_open(self):
        for spec, usage in self.usage.items():
            held = sum(a for a, chosen in self.open.values() if spec in chosen)
            assert usage.reserved_micros == held


BudgetModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBudgetModel = BudgetModel.TestCase


@given(
    reserved=st.integers(min_value=0, max_value=10**12),
    reported=st.integers(min_value=0, max_value=10**15),
)
def test_a_charge_is_capped_at_its_reservation_and_the_excess_kept(reserved, reported):
    charge = cap_charge(reserved, reported)
    assert charge.charged_micros == min(reserved, reported)
    assert charge.over_quote_micros == max(0, reported - reserved)
    assert charge.reported_micros == reported


def test_the_issue_case_five_calls_billed_at_3_20_each_on_a_5_cent_budget():
    spec = BudgetSpec("key", "web-app", 50_000, "day")
    usage = BudgetUsage(spec, 0)
    quote = 9_165  # gpt-image-1.5 low 1024x1024
    for _ in range(5):
        fits = check_fit([usage], quote, 0.0)
        assert isinstance(fits, Fits)
        usage = fits.usages[0]
    for _ in range(5):
        usage = usage.settle(quote, cap_charge(quote, 3_200_010).charged_micros)
    assert usage == BudgetUsage(spec, 5 * quote, 0)
    assert cap_charge(quote, 3_200_010) == Charge(quote, 3_200_010 - quote)
