"""A/B tests of images: sticky weighted assignment and the two-proportion z-test.

Assignment hashes `sha256(f"{experiment}\\n{subject}")` onto the cumulative integer weights,
so a subject sees the same variant for as long as the variants and weights stay the same,
and a new experiment name reshuffles everyone independently of older experiments.

The test is the pooled two-proportion z-test (normal approximation). A report compares each
non-control variant with the control; with several comparisons, alpha is split between them
(Bonferroni), so that testing three challengers finds no more false winners than testing one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "Comparison",
    "Counts",
    "ExperimentReport",
    "TestResult",
    "Variant",
    "VariantStats",
    "assign",
    "control_of",
    "impressions_needed",
    "report",
    "two_proportion_test",
    "verdict",
]

_NORMAL = NormalDist()
_POWER = 0.8  # the chance of detecting the observed difference, for "impressions needed"


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: int = 1
    control: bool = False
    label: str = ""


@dataclass(frozen=True, slots=True)
class Counts:
    impressions: int = 0
    conversions: int = 0


@dataclass(frozen=True, slots=True)
class TestResult:
    """`z` is positive when B converts better, like `lift`, B's rate relative to A's
    (0.25 = B converts 25 % more often; None when A's rate is 0)."""

    __test__ = False  # not a pytest test class

    z: float
    p_value: float
    lift: float | None
    significant: bool


@dataclass(frozen=True, slots=True)
class VariantStats:
    variant: Variant
    impressions: int
    conversions: int

    @property
    def rate(self) -> float | None:
        return None if self.impressions == 0 else self.conversions / self.impressions


@dataclass(frozen=True, slots=True)
class Comparison:
    """One challenger against the control (A = control, B = challenger)."""

    variant: str
    control: str
    result: TestResult
    alpha: float  # the per-comparison alpha after the Bonferroni split


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    stats: tuple[VariantStats, ...]
    control: str
    comparisons: tuple[Comparison, ...]
    alpha: float
    winner: str | None
    message: str


def _validate(variants: Sequence[Variant]) -> int:
    if not variants:
        raise ValueError("an experiment needs at least one variant")
    if any(v.weight < 0 for v in variants):
        raise ValueError("variant weights must be 0 or more")
    total = sum(v.weight for v in variants)
    if total <= 0:
        raise ValueError("at least one variant needs a weight above 0")
    if len({v.id for v in variants}) != len(variants):
        raise ValueError("variant ids must be unique")
    return total


def assign(experiment: str, subject: str, variants: Sequence[Variant]) -> Variant:
    """The subject's variant: deterministic, and weighted by the integer weights."""
    total = _validate(variants)
    text = f"{experiment}\n{subject}".encode("utf-8", "surrogatepass")  # never raises
    digest = hashlib.sha256(text).digest()
    point = int.from_bytes(digest, "big") % total  # bias ~ total / 2**256: none to speak of
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    raise AssertionError("unreachable: the point lies below the total weight")


def _check_counts(conversions: int, n: int, name: str) -> None:
    if n < 0 or conversions < 0 or conversions > n:
        raise ValueError(f"{name}: need 0 <= conversions <= impressions, got {conversions}/{n}")


def two_proportion_test(
    conv_a: int, n_a: int, conv_b: int, n_b: int, alpha: float = 0.05
) -> TestResult:
    """Pooled two-proportion z-test, two-sided. No data, or no variation at all (nobody or
    everybody converted on both sides), is z = 0, p = 1: no evidence of a difference."""
    _check_counts(conv_a, n_a, "A")
    _check_counts(conv_b, n_b, "B")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie between 0 and 1, got {alpha}")
    rate_a = conv_a / n_a if n_a else 0.0
    rate_b = conv_b / n_b if n_b else 0.0
    lift = (rate_b - rate_a) / rate_a if n_a and n_b and rate_a > 0 else None
    if n_a == 0 or n_b == 0:
        return TestResult(0.0, 1.0, lift, False)
    pooled = (conv_a + conv_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return TestResult(0.0, 1.0, lift, False)
    z = (rate_b - rate_a) / math.sqrt(variance)
    p_value = min(1.0, max(0.0, math.erfc(abs(z) / math.sqrt(2))))
    return TestResult(z, p_value, lift, p_value < alpha)


def impressions_needed(rate_a: float, rate_b: float, alpha: float, power: float = _POWER) -> int:
    """Impressions per variant for a two-sided test at `alpha` to detect rates `rate_a` vs
    `rate_b` with `power` (the usual normal-approximation sample size); 0 when equal."""
    if rate_a == rate_b:
        return 0
    z_alpha = _NORMAL.inv_cdf(1 - alpha / 2)
    z_power = _NORMAL.inv_cdf(power)
    mean = (rate_a + rate_b) / 2
    spread = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        rate_a * (1 - rate_a) + rate_b * (1 - rate_b)
    )
    return math.ceil(spread**2 / (rate_a - rate_b) ** 2)


def control_of(variants: Sequence[Variant]) -> Variant:
    """The variant marked control, else the first one."""
    return next((v for v in variants if v.control), variants[0])


def report(
    variants: Sequence[Variant], counts: Mapping[str, Counts], alpha: float = 0.05
) -> ExperimentReport:
    """Impressions, conversions and rates per variant; each challenger against the control;
    a winner only when its difference from the control is significant."""
    _validate(variants)
    control = control_of(variants)
    stats = tuple(
        VariantStats(
            v, counts.get(v.id, Counts()).impressions, counts.get(v.id, Counts()).conversions
        )
        for v in variants
    )
    for item in stats:
        _check_counts(item.conversions, item.impressions, item.variant.id)
    base = next(s for s in stats if s.variant.id == control.id)
    challengers = [s for s in stats if s.variant.id != control.id]
    split = alpha / max(1, len(challengers))
    comparisons = tuple(
        Comparison(
            s.variant.id,
            control.id,
            two_proportion_test(
                base.conversions, base.impressions, s.conversions, s.impressions, split
            ),
            split,
        )
        for s in challengers
    )
    winner = _winner(base, stats, comparisons)
    message = _message(base, stats, comparisons, winner, alpha)
    return ExperimentReport(stats, control.id, comparisons, alpha, winner, message)


def _winner(
    base: VariantStats, stats: Sequence[VariantStats], comparisons: Sequence[Comparison]
) -> str | None:
    """The best challenger that beats the control significantly; else the control when it
    beats every challenger significantly; else None."""
    rates = {s.variant.id: s.rate or 0.0 for s in stats}
    better = [c for c in comparisons if c.result.significant and c.result.z > 0]
    if better:
        return max(better, key=lambda c: (rates[c.variant], -c.result.p_value)).variant
    if comparisons and all(c.result.significant and c.result.z < 0 for c in comparisons):
        return base.variant.id
    return None


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _message(
    base: VariantStats,
    stats: Sequence[VariantStats],
    comparisons: Sequence[Comparison],
    winner: str | None,
    alpha: float,
) -> str:
    """A headline, then one verdict per challenger, a line each."""
    by_id = {s.variant.id: s for s in stats}
    if not comparisons:
        return "Only one variant: nothing to compare."
    if not any(s.impressions for s in stats):
        return "No impressions yet: nothing to compare."
    if winner is not None and winner != base.variant.id:
        headline = f"{winner} wins: it converts significantly better than the control."
    elif winner is not None:
        headline = (
            f"The control {winner} wins: it converts significantly better than every "
            f"challenger at alpha {alpha:g}."
        )
    else:
        headline = f"No significant winner yet at alpha {alpha:g}."
    lines = [verdict(base, by_id[c.variant], c) for c in comparisons]
    return "\n".join([headline, *lines])


def verdict(control: VariantStats, challenger: VariantStats, comparison: Comparison) -> str:
    """What a reader needs about one challenger: better or worse than the control, how sure
    (the p-value against the alpha it must beat), and, when not sure yet, about how many more
    impressions per variant would settle it if the rates hold (80 % power)."""
    name, base = challenger.variant.id, control.variant.id
    rate, base_rate = challenger.rate, control.rate
    result = comparison.result
    if rate is None or base_rate is None:
        return (
            f"{name} vs the control {base}: no comparison yet ({challenger.impressions} vs "
            f"{control.impressions} impressions). Keep collecting impressions."
        )
    if rate == base_rate:
        return (
            f"{name} converts like the control {base} so far ({_percent(rate)} each): "
            "no difference yet. Keep collecting impressions."
        )
    direction = "better" if rate > base_rate else "worse"
    lift = "" if result.lift is None else f", {result.lift * 100:+.1f}%"
    rates = f"{_percent(rate)} vs {_percent(base_rate)}{lift}"
    if result.significant:
        return (
            f"{name} converts {direction} than the control {base} ({rates}): significant, "
            f"p = {result.p_value:.3g} < {comparison.alpha:.3g}."
        )
    text = (
        f"{name} looks {direction} than the control {base} ({rates}) but is not significant "
        f"yet: p = {result.p_value:.3g}, needs < {comparison.alpha:.3g}."
    )
    needed = impressions_needed(base_rate, rate, comparison.alpha)
    more = needed - min(control.impressions, challenger.impressions)
    if more <= 0:
        return text + " Keep collecting impressions."
    return text + (
        f" If the rates hold, about {more:,} more impressions per variant would settle it "
        f"({needed:,} each, 80% power)."
    )
