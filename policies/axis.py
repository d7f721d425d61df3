"""A money axis for charts: ticks at round amounts from $0 up past the tallest bar.

The step is the smallest "nice" amount (1, 2, 2.5 or 5 times a power of ten micro-USD) that
covers the peak in at most `intervals` steps, so labels read $0, $0.25, $0.5... rather than
$0, $0.000001... A peak of zero (nothing spent yet, a normal state) gets the axis $0 to $1.
"""

from __future__ import annotations

from typing import Final

from policies.budget import MICROS_PER_USD

__all__ = ["EMPTY_TOP", "nice_ticks"]

EMPTY_TOP: Final = MICROS_PER_USD  # micro-USD: the axis of a chart with nothing on it, $0 to $1
_MANTISSAS: Final = (10, 20, 25, 50)  # tenths: 1, 2, 2.5, 5


def nice_ticks(peak_micros: int, intervals: int = 4) -> tuple[int, ...]:
    """Evenly spaced ticks in micro-USD: 0 first, the last at or above `peak_micros` (the
    first such multiple of the step), at most `intervals` steps."""
    if intervals < 1:
        raise ValueError(f"intervals must be at least 1, got {intervals}")
    peak = peak_micros if peak_micros > 0 else EMPTY_TOP
    step = _step(peak, intervals)
    count = -(-peak // step)  # ceiling: the first tick at or above the peak
    return tuple(step * k for k in range(count + 1))


def _step(peak: int, intervals: int) -> int:
    """The smallest nice whole number of micro-USD with step * intervals >= peak."""
    power = 1
    while True:
        for tenths in _MANTISSAS:
            step, rest = divmod(tenths * power, 10)
            if rest == 0 and step * intervals >= peak:
                return step
        power *= 10
