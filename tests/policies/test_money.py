"""Dollars as text <-> integer micro-USD, exactly; a request's cost shared by its images."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.budget import format_usd, parse_usd, split_micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0", 0),
        ("0.04", 40_000),
        ("25", 25_000_000),
        (" 0.000001 ", 1),
        ("1234.56789", 1_234_567_890),
        ("1e-2", 10_000),
        ("0.040000", 40_000),
    ],
)
def test_parse_usd_is_exact(text, micros):
    assert parse_usd(text) == micros


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("lots", "not an amount"),
        ("", "not an amount"),
        ("NaN", "0 or more"),
        ("Infinity", "0 or more"),
        ("-0.01", "0 or more"),
        ("0.0000005", "finer than a micro-dollar"),
        ("1e999999999", "more dollars"),
    ],
)
def test_parse_usd_refuses_what_is_not_micro_dollars(text, why):
    with pytest.raises(ValueError, match=why):
        parse_usd(text)


@given(st.integers(min_value=0, max_value=10**21))
def test_parse_usd_reads_what_format_usd_writes(micros):
    assert parse_usd(format_usd(micros)) == micros


def test_split_micros_gives_the_first_images_the_rest():
    assert split_micros(40_000, 3) == (13_334, 13_333, 13_333)
    assert split_micros(100_000, 1) == (100_000,)
    assert split_micros(7, 0) == (7,)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=50))
def test_split_micros_sums_exactly_and_differs_by_at_most_one(total, count):
    shares = split_micros(total, count)
    assert len(shares) == count and sum(shares) == total
    assert max(shares) - min(shares) <= 1
