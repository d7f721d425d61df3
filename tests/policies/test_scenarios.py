"""Typical monthly scenarios priced on the built-in catalog; spend projected to a month."""

from __future__ import annotations

import pytest

from policies.scenarios import (
    REPRESENTATIVE,
    SCENARIOS,
    Pick,
    price_scenarios,
    project_monthly,
)
from proxy.catalog_loader import load_catalog


@pytest.fixture(scope="module")
def priced():
    return {p.pick.label: p for p in price_scenarios(load_catalog())}


def test_the_scenarios_and_representative_models():
    assert [(s.name, s.images_per_month) for s in SCENARIOS] == [
        ("Hobbyist", 100),
        ("Content creator", 500),
        ("Agency", 2000),
        ("Enterprise", 10000),
    ]
    assert [p.label for p in REPRESENTATIVE] == [
        "auto",
        "flux-schnell",
        "gpt-image-1-mini (low)",
        "gpt-image-1.5 (medium)",
        "flux-1.1-pro",
        "ideogram-v2",
    ]


def test_flat_priced_models_are_the_catalog_price_times_the_volume(priced):
    # flux-schnell $0.003, flux-1.1-pro $0.04, ideogram-v2 $0.08 per image
    assert priced["flux-schnell"].monthly_micros == (300_000, 1_500_000, 6_000_000, 30_000_000)
    assert priced["flux-1.1-pro"].monthly_micros[-1] == 400_000_000  # 10000 x $0.04 = $400
    assert priced["ideogram-v2"].per_image_micros == 80_000
    assert priced["ideogram-v2"].monthly_micros[0] == 8_000_000  # 100 x $0.08 = $8


def test_auto_is_the_cheapest_model_that_can_serve(priced):
    auto = priced["auto"]
    assert auto.served_by == "flux-schnell"
    assert auto.monthly_micros == priced["flux-schnell"].monthly_micros


def test_token_priced_models_include_the_prompt_tokens_of_the_quote(priced):
    # gpt-image-1-mini low 1024x1024: $0.005 per image, plus (81 prompt chars + 16) tokens of
    # text in at $2 per 1M tokens = 194 micro-USD (the gateway's worst-case quote)
    assert priced["gpt-image-1-mini (low)"].per_image_micros == 5_000 + 97 * 2
    # gpt-image-1.5 medium: $0.034 + 97 tokens at $5 per 1M
    assert priced["gpt-image-1.5 (medium)"].per_image_micros == 34_000 + 97 * 5


def test_models_a_gateway_does_not_list_or_cannot_serve_have_no_price():
    catalog = load_catalog()
    got = price_scenarios(
        catalog,
        (Pick("flux-schnell"), Pick("midjourney-v6.1"), Pick("auto"), Pick("no-such-model")),
        served={"auto", "midjourney-v6.1", "ideogram-v2", "flux-1.1-pro"},
    )
    schnell, midjourney, auto, missing = got
    assert schnell.per_image_micros is None and "not listed" in schnell.note
    assert midjourney.per_image_micros is None and "not available" in midjourney.note
    assert auto.served_by == "flux-1.1-pro"  # the cheapest model the gateway lists
    assert missing.monthly_micros == (None, None, None, None)


def test_project_monthly_is_exact():
    assert project_monthly(7_000_000, 7 * 86_400) == 30_000_000
    assert project_monthly(1, 86_400) == 30
    assert project_monthly(10_000_000, 3 * 86_400) == 100_000_000
    assert project_monthly(1_000_000, 7 * 86_400) == 4_285_714  # 30/7 dollars, half up
    assert project_monthly(1, 7 * 86_400) == 4  # 30/7 micros = 4.29, half up
    assert project_monthly(1, 4 * 86_400) == 8  # 7.5 micros, half up
    assert project_monthly(5_000_000, 30) == 0  # too short a window to say
    with pytest.raises(ValueError, match="negative"):
        project_monthly(-1, 86_400)
