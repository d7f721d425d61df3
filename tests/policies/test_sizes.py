"""parse_size is the one reader of 'WIDTHxHEIGHT' strings; dimensions and check_size use it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.sizes import dimensions, parse_size


def test_parse_size() -> None:
    assert parse_size("1024x1536") == (1024, 1536)
    assert parse_size("3840x2160") == (3840, 2160)
    assert parse_size("auto") is None


@pytest.mark.parametrize("size", ["", "1024", "1024x", "x1024", "0x10", "10x0", "a x b", "10X10"])
def test_parse_size_rejects_malformed(size: str) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size(size)


@given(st.integers(10, 99_999), st.integers(10, 99_999))
def test_sizes_read_back_and_dimensions_agree(width: int, height: int) -> None:
    size = f"{width}x{height}"
    assert parse_size(size) == dimensions(size) == (width, height)


def test_dimensions_of_auto_is_the_given_default() -> None:
    assert dimensions("auto") == (1024, 1024)
    assert dimensions("auto", auto=(1536, 1024)) == (1536, 1024)
