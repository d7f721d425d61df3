"""Nice ticks for money axes: round steps, zero drawn as a normal $0 to $1 axis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.axis import EMPTY_TOP, nice_ticks
from policies.budget import format_usd


def is_nice(step: int) -> bool:
    """1, 2, 2.5 or 5 times a power of ten."""
    while step % 10 == 0:
        step //= 10
    return step in {1, 2, 5, 25}


@pytest.mark.parametrize("peak", [0, -5])
def test_nothing_spent_is_zero_to_one_dollar(peak):
    assert [f"${format_usd(t)}" for t in nice_ticks(peak)] == [
        "$0", "$0.25", "$0.5", "$0.75", "$1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("peak", "labels"),
    [
        (1, ["0", "0.000001"]),
        (3, ["0", "0.000001", "0.000002", "0.000003"]),
        (9_000, ["0", "0.0025", "0.005", "0.0075", "0.01"]),
        (80_000, ["0", "0.02", "0.04", "0.06", "0.08"]),
        (129_000, ["0", "0.05", "0.1", "0.15"]),
        (25_000_000, ["0", "10", "20", "30"]),
    ],
)
def test_known_peaks(peak, labels):
    assert [format_usd(t) for t in nice_ticks(peak)] == labels


def test_intervals_must_be_positive():
    with pytest.raises(ValueError, match="intervals"):
        nice_ticks(10, 0)


@given(st.integers(min_value=-10, max_value=10**15), st.integers(min_value=1, max_value=10))
def test_ticks_start_at_zero_cover_the_peak_and_step_evenly_by_a_nice_amount(peak, intervals):
    ticks = nice_ticks(peak, intervals)
    step = ticks[1] - ticks[0]
    assert ticks[0] == 0 and step > 0 and is_nice(step)
    assert all(b - a == step for a, b in itertools.pairwise(ticks))
    assert len(ticks) - 1 <= intervals
    covered = peak if peak > 0 else EMPTY_TOP
    assert ticks[-1] >= covered > ticks[-2]  # the first tick at or above the peak
    assert len({format_usd(t) for t in ticks}) == len(ticks)  # no two labels alike
