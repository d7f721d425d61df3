"""Sticky weighted assignment, the two-proportion z-test on known numbers, and the report."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.abtest import (
    Counts,
    Variant,
    assign,
    impressions_needed,
    report,
    two_proportion_test,
    verdict,
)

AB = (Variant("A", control=True), Variant("B"))

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
weighted = st.lists(
    st.tuples(ids, st.integers(min_value=0, max_value=50)), min_size=1, max_size=6
).filter(lambda pairs: len({p[0] for p in pairs}) == len(pairs) and any(w for _, w in pairs))


def variants_of(pairs: list[tuple[str, int]]) -> tuple[Variant, ...]:
    return tuple(Variant(vid, weight) for vid, weight in pairs)


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=0, max_value=100_000))
    return draw(st.integers(min_value=0, max_value=n)), n


# -- assignment ----------------------------------------------------------------------------


@given(weighted, st.text(max_size=20), st.text(max_size=200))
def test_assignment_is_deterministic_and_stays_within_the_variants(pairs, experiment, subject):
    variants = variants_of(pairs)
    first = assign(experiment, subject, variants)
    assert first in variants
    assert first.weight > 0  # a variant of weight 0 is never shown
    assert assign(experiment, subject, variants) == first
    assert assign(experiment, subject, list(variants)) == first


def test_assignment_is_the_documented_hash_of_experiment_and_subject():
    import hashlib

    variants = (Variant("A", 3), Variant("B", 5), Variant("C", 2))
    for subject in ("alice", "bob", "subject-17", "é"):
        digest = hashlib.sha256(f"hero\n{subject}".encode()).digest()
        point = int.from_bytes(digest, "big") % 10
        expected = "A" if point < 3 else "B" if point < 8 else "C"
        assert assign("hero", subject, variants).id == expected


def test_equal_weights_split_ten_thousand_subjects_about_evenly():
    shown_b = sum(assign("hero-2026", f"user-{i}", AB).id == "B" for i in range(10_000))
    assert abs(shown_b / 10_000 - 0.5) <= 0.03


def test_weights_shape_the_split_and_experiments_shuffle_independently():
    variants = (Variant("A", 1), Variant("B", 3))
    shown_b = sum(assign("banner", f"u{i}", variants).id == "B" for i in range(8_000))
    assert abs(shown_b / 8_000 - 0.75) <= 0.03
    same = sum(assign("one", f"u{i}", AB).id == assign("two", f"u{i}", AB).id for i in range(4_000))
    assert abs(same / 4_000 - 0.5) <= 0.04  # independent, not the same split twice


@pytest.mark.parametrize(
    "variants",
    [(), (Variant("A", 0), Variant("B", 0)), (Variant("A", -1), Variant("B")), AB + AB[:1]],
)
def test_bad_variant_sets_are_refused(variants):
    with pytest.raises(ValueError):  # noqa: PT011  # the message varies by the fault
        assign("x", "y", variants)


# -- the z-test ----------------------------------------------------------------------------


def reference(conv_a: int, n_a: int, conv_b: int, n_b: int) -> tuple[float, float]:
    """The textbook pooled z-test, computed independently (NormalDist, not erfc)."""
    p_a, p_b = conv_a / n_a, conv_b / n_b
    pooled = (conv_a + conv_b) / (n_a + n_b)
    z = (p_b - p_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return z, 2 * (1 - NormalDist().cdf(abs(z)))


def test_known_numbers_200_of_1000_against_250_of_1000():
    result = two_proportion_test(200, 1000, 250, 1000)
    z, p = reference(200, 1000, 250, 1000)
    # by hand: pooled 0.225, se = sqrt(0.225 * 0.775 * 0.002) = 0.0186749, z = 0.05 / se
    assert result.z == pytest.approx(2.6774, abs=1e-4)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.p_value == pytest.approx(0.00742, abs=5e-5)
    assert result.lift == pytest.approx(0.25)
    assert result.significant


def test_a_textbook_example_that_is_not_significant():
    # 45/500 (9 %) vs 55/500 (11 %): z = 1.0541, p = 0.2918
    result = two_proportion_test(45, 500, 55, 500)
    assert result.z == pytest.approx(1.0541, abs=1e-4)
    assert result.p_value == pytest.approx(0.2918, abs=1e-4)
    assert not result.significant


@pytest.mark.parametrize(
    ("args", "lift"),
    [
        ((0, 0, 0, 0), None),  # no data at all
        ((0, 0, 5, 10), None),  # no data for A
        ((5, 10, 0, 0), None),  # no data for B
        ((0, 100, 0, 100), None),  # nobody converted: no variation
        ((100, 100, 100, 100), 0.0),  # everybody converted
    ],
)
def test_edge_cases_carry_no_evidence(args, lift):
    result = two_proportion_test(*args)
    assert (result.z, result.p_value, result.significant) == (0.0, 1.0, False)
    assert result.lift == lift


def test_all_against_none_is_decisive():
    result = two_proportion_test(0, 50, 50, 50)
    assert result.p_value < 1e-20 and result.significant and result.z > 0
    assert result.lift is None  # A's rate is 0: no relative lift


@pytest.mark.parametrize("args", [(-1, 10, 1, 10), (11, 10, 1, 10), (1, 10, 2, -1)])
def test_impossible_counts_are_refused(args):
    with pytest.raises(ValueError, match="conversions"):
        two_proportion_test(*args)


@given(counts(), counts())
def test_p_value_is_a_probability_and_the_test_is_symmetric(a, b):
    forward = two_proportion_test(*a, *b)
    backward = two_proportion_test(*b, *a)
    assert 0.0 <= forward.p_value <= 1.0
    assert forward.p_value == pytest.approx(backward.p_value, abs=1e-12)
    assert forward.z == pytest.approx(-backward.z, abs=1e-9)
    assert forward.significant == (forward.p_value < 0.05)


def test_impressions_needed_matches_the_usual_formula():
    # 10 % vs 12 % at alpha 0.05, 80 % power: about 3,841 per group (standard tables: ~3,840)
    assert 3_800 <= impressions_needed(0.10, 0.12, 0.05) <= 3_900
    assert impressions_needed(0.1, 0.1, 0.05) == 0


# -- the report ----------------------------------------------------------------------------


def test_report_names_a_significant_winner():
    result = report(AB, {"A": Counts(1000, 200), "B": Counts(1000, 250)})
    assert [(s.variant.id, s.impressions, s.conversions, s.rate) for s in result.stats] == [
        ("A", 1000, 200, 0.2),
        ("B", 1000, 250, 0.25),
    ]
    assert result.control == "A" and result.winner == "B"
    (comparison,) = result.comparisons
    assert comparison.result.p_value == pytest.approx(reference(200, 1000, 250, 1000)[1])
    assert "B wins" in result.message and "25.0%" in result.message


def test_report_without_a_winner_says_so_and_estimates_what_it_needs():
    result = report(AB, {"A": Counts(500, 45), "B": Counts(500, 55)})
    assert result.winner is None
    assert "No significant winner yet" in result.message
    assert "more impressions per variant" in result.message


def test_report_with_no_data_and_a_losing_challenger():
    empty = report(AB, {})
    assert empty.winner is None and all(s.rate is None for s in empty.stats)
    assert empty.message == "No impressions yet: nothing to compare."
    shown_once = report(AB, {"A": Counts(1, 0)})
    assert "Keep collecting impressions" in shown_once.message
    losing = report(AB, {"A": Counts(1000, 250), "B": Counts(1000, 150)})
    assert losing.winner == "A"  # the control beats the only challenger significantly
    assert "control A" in losing.message


def test_bonferroni_split_across_several_challengers():
    variants = (Variant("A", control=True), Variant("B"), Variant("C"), Variant("D"))
    counts_by = {
        "A": Counts(1000, 200),
        "B": Counts(1000, 240),  # p ~ 0.03: significant alone, not after the split
        "C": Counts(1000, 200),
        "D": Counts(1000, 195),
    }
    result = report(variants, counts_by)
    b = next(c for c in result.comparisons if c.variant == "B")
    assert b.alpha == pytest.approx(0.05 / 3)
    assert 0.0167 < b.result.p_value < 0.05
    assert result.winner is None


def test_the_marked_control_is_the_baseline_wherever_it_sits():
    variants = (Variant("new"), Variant("old", control=True))
    result = report(variants, {"old": Counts(1000, 100), "new": Counts(1000, 160)})
    assert result.control == "old" and result.winner == "new"


def test_simulated_audience_picks_the_better_variant():
    rng = random.Random(20260115)
    shown: dict[str, list[int]] = {"A": [0, 0], "B": [0, 0]}
    for i in range(4_000):
        vid = assign("simulated", f"s{i}", AB).id
        shown[vid][0] += 1
        shown[vid][1] += rng.random() < (0.12 if vid == "B" else 0.08)
    result = report(AB, {k: Counts(*v) for k, v in shown.items()})
    assert result.winner == "B"


@given(counts(), counts())
def test_z_has_the_sign_of_the_lift(a, b):
    """B converting more often is a positive z and a positive lift, never one of each."""
    result = two_proportion_test(*a, *b)
    if result.lift is not None and result.z != 0:
        assert (result.z > 0) == (result.lift > 0)


# -- the verdict: which variant, better or worse, how sure, how many more impressions -------


def only_verdict(a: Counts, b: Counts) -> str:
    result = report(AB, {"A": a, "B": b})
    control, challenger = result.stats
    return verdict(control, challenger, result.comparisons[0])


def test_verdict_of_a_significantly_better_challenger():
    text = only_verdict(Counts(1000, 200), Counts(1000, 250))
    assert text == (
        "B converts better than the control A (25.0% vs 20.0%, +25.0%): significant, "
        "p = 0.00742 < 0.05."
    )


def test_verdict_of_a_significantly_worse_challenger():
    text = only_verdict(Counts(1000, 250), Counts(1000, 150))
    assert text.startswith("B converts worse than the control A (15.0% vs 25.0%, -40.0%)")
    assert "significant, p = 2.27e-08 < 0.05" in text


def test_verdict_of_a_worse_challenger_that_is_not_sure_yet():
    """The issue's case: a lift of about -40 % that is not significant yet."""
    text = only_verdict(Counts(96, 24), Counts(101, 15))
    assert text.startswith("B looks worse than the control A (14.9% vs 25.0%, -40.6%)")
    assert "not significant yet: p = 0.074, needs < 0.05" in text
    needed = impressions_needed(0.25, 15 / 101, 0.05)
    assert f"about {needed - 96:,} more impressions per variant" in text
    assert f"({needed:,} each, 80% power)" in text
    assert "closest" not in report(AB, {"A": Counts(96, 24), "B": Counts(101, 15)}).message


def test_verdict_of_a_better_challenger_that_is_not_sure_yet():
    text = only_verdict(Counts(500, 45), Counts(500, 55))
    assert text.startswith("B looks better than the control A (11.0% vs 9.0%, +22.2%)")
    assert "more impressions per variant would settle it" in text


def test_verdict_without_data_or_without_a_difference():
    assert "no comparison yet (0 vs 10 impressions)" in only_verdict(Counts(10, 1), Counts())
    same = only_verdict(Counts(10, 1), Counts(10, 1))
    assert same.startswith("B converts like the control A so far (10.0% each)")


def test_the_message_is_a_headline_then_a_verdict_per_challenger():
    variants = (Variant("A", control=True), Variant("B"), Variant("C"))
    counts_by = {"A": Counts(1000, 200), "B": Counts(1000, 300), "C": Counts(1000, 190)}
    lines = report(variants, counts_by).message.splitlines()
    assert lines[0] == "B wins: it converts significantly better than the control."
    assert lines[1].startswith("B converts better than the control A")
    assert lines[2].startswith("C looks worse than the control A")
