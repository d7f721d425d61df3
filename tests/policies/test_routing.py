"""Routing, pricing and translation over the shipped catalog: pure, no event loop."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.circuit import Blocked, Breaker, Circuit, record, state_at
from policies.errors import NoRoute
from policies.models import ImageRequest
from policies.pricing import Usage, quote, settle
from policies.routing import RoutePolicy, plan_route
from proxy.catalog_loader import load_catalog

CATALOG = load_catalog()
ALL = frozenset({"openai", "replicate", "fal"})


def req(model: str = "auto", **kw) -> ImageRequest:
    base = dict(
        operation="generate",
        model=model,
        prompt="a red fox",
        size="1024x1024",
        quality="auto",
        output_format="png",
        background="auto",
        moderation="auto",
    )
    base.update(kw)
    return ImageRequest(**base)


def names(request: ImageRequest, **policy) -> list[str]:
    pol = RoutePolicy(providers=policy.pop("providers", ALL), **policy)
    return [c.spec.name for c in plan_route(request, CATALOG, pol, images=1)]


def test_auto_picks_the_cheapest_suitable_model():
    order = names(req())
    assert order[0] == "flux-schnell"  # $0.003 per image
    quotes = [c.quote_micros for c in plan_route(req(), CATALOG, RoutePolicy(ALL), images=1)]
    assert quotes == sorted(quotes)


def test_use_cases_need_their_strength():
    assert names(req("text"))[0] == "gpt-image-1-mini"
    for name in names(req("text")):
        assert "text" in CATALOG.models[name].strengths
    assert names(req("logo"))[0] in {"gpt-image-1.5", "ideogram-v2", "gpt-image-2"}
    assert (
        names(req("photo"))[0] == "flux-1.1-pro"
        or "photo" in CATALOG.models[names(req("photo"))[0]].strengths
    )


def test_masks_and_edits_go_only_to_models_that_take_them():
    edit = req(operation="edit", images=("a" * 64,), mask="b" * 64)
    for name in names(edit):
        assert CATALOG.models[name].masks


def test_a_pinned_model_is_honoured_first():
    assert names(req("gpt-image-1.5"))[0] == "gpt-image-1.5"
    assert names(req("gpt-image-1.5")) == ["gpt-image-1.5"]  # substitute = never
    cheaper = names(req("gpt-image-1.5"), substitute="cheaper")
    assert cheaper[0] != "gpt-image-1.5" and "gpt-image-1.5" in cheaper


def test_licence_policy_skips_non_commercial_models():
    assert "flux-dev" in names(req("art"))
    assert "flux-dev" not in names(req("art"), commercial_only=True)


def test_unconfigured_providers_and_open_circuits_are_skipped():
    assert set(names(req(), providers=frozenset({"openai"}))) <= {
        n for n, s in CATALOG.models.items() if s.provider == "openai"
    }
    pol = RoutePolicy(ALL)
    order = [
        c.spec.name
        for c in plan_route(
            req(),
            CATALOG,
            pol,
            images=1,
            blocked=lambda m: Blocked("circuit open") if m == "flux-schnell" else None,
        )
    ]
    assert "flux-schnell" not in order


def test_no_route_explains_why():
    with pytest.raises(NoRoute) as info:
        names(req("gpt-image-1.5"), providers=frozenset({"replicate"}))
    assert "not configured" in info.value.message


def test_retired_models_go_to_their_successor_with_their_meaning():
    [candidate] = plan_route(
        req(
            "dall-e-3",
            quality="hd",
            style="natural",
            size="1792x1024",
            background=None,
            moderation=None,
        ),
        CATALOG,
        RoutePolicy(ALL),
        images=1,
    )
    assert candidate.spec.name == "gpt-image-1.5"
    up = candidate.request
    assert (up.quality, up.size, up.style) == ("high", "1536x1024", None)
    assert "natural" in up.prompt
    assert candidate.target_size == (1792, 1024)
    small = plan_route(
        req("dall-e-2", size="256x256", quality="standard", background=None, moderation=None),
        CATALOG,
        RoutePolicy(ALL),
        images=1,
    )[0]
    assert small.spec.name == "gpt-image-1-mini" and small.request.size == "1024x1024"
    assert small.target_size == (256, 256)


def test_unavailable_models():  # a key's allow-list: tests/policies/test_admission.py
    with pytest.raises(NoRoute) as info:
        names(req("midjourney-v6.1"))
    assert "no official API" in info.value.message


def test_pressure_keeps_only_the_cheap_tier():
    for name in names(req(), cheap_only=True):
        assert "budget" in CATALOG.models[name].strengths


@given(
    st.sampled_from(["auto", "text", "photo", "art", "product", "logo", "fast", "budget"]),
    st.sampled_from(["auto", "1024x1024", "1536x1024", "1024x1536", "1792x1024"]),
    st.sampled_from(["auto", "low", "medium", "high"]),
    st.integers(1, 10),
)
def test_router_picks_the_cheapest_eligible(model, size, quality, n):
    request = req(model, size=size, quality=quality)
    pol = RoutePolicy(ALL)
    found = plan_route(request, CATALOG, pol, images=n)
    assert found[0].quote_micros == min(c.quote_micros for c in found)
    assert all(c.quote_micros >= 0 for c in found)


# ---- pricing -------------------------------------------------------------------------------


def test_per_image_prices_match_the_catalog():
    spec = CATALOG.models["flux-schnell"]
    assert quote(spec, req("flux-schnell"), 4) == 12_000
    dalle3 = CATALOG.models["dall-e-3"]
    assert quote(dalle3, req("dall-e-3", quality="hd", size="1792x1024"), 1) == 120_000


def test_token_priced_models_settle_from_usage_to_the_micro_dollar():
    spec = CATALOG.models["gpt-image-1.5"]
    usage = Usage(text_in=10, image_in=0, image_out=4160)
    # 10 x $5/1M + 4160 x $32/1M = $0.00005 + $0.13312 = 133170 micro-USD
    assert settle(spec, req("gpt-image-1.5", quality="high"), 1, usage=usage) == 133_170
    assert quote(spec, req("gpt-image-1.5", quality="high"), 1) >= 133_170


def test_megapixel_and_gpu_prices():
    fal = CATALOG.models["fal-flux-schnell"]
    assert (
        settle(fal, req("fal-flux-schnell"), 1, output_size=(1024, 1024)) == 3_146
    )  # ceil(3000 x 1.048576)
    local = replace(
        CATALOG.models["sd-3.5-large"],
        price=replace(
            CATALOG.models["sd-3.5-large"].price,
            per_image={},
            gpu_hour=1_200_000,
            gpu_seconds_per_image=6.0,
        ),
    )
    assert settle(local, req("sd-3.5-large"), 1, gpu_seconds=4.5) == 1_500
    assert quote(local, req("sd-3.5-large"), 2) == 4_000


@given(st.integers(0, 10_000), st.integers(0, 100_000), st.integers(0, 10_000))
def test_settled_cost_is_never_negative_and_monotone(text_in, image_out, extra):
    spec = CATALOG.models["gpt-image-1-mini"]
    low = settle(spec, req("gpt-image-1-mini"), 1, usage=Usage(text_in, 0, image_out))
    high = settle(spec, req("gpt-image-1-mini"), 1, usage=Usage(text_in, 0, image_out + extra))
    assert 0 <= low <= high


# ---- circuit breaker -----------------------------------------------------------------------


def test_circuit_opens_after_failures_and_half_opens_after_cooldown():
    breaker = Breaker(threshold=2, cooldown=10)
    c = record(Circuit(), breaker, ok=False, now=0)
    assert state_at(c, breaker, 1) == "closed"
    c = record(c, breaker, ok=False, now=1)
    assert state_at(c, breaker, 2) == "open"
    assert state_at(c, breaker, 11) == "half_open"
    reopened = record(c, breaker, ok=False, now=11)
    assert state_at(reopened, breaker, 12) == "open"
    assert state_at(record(c, breaker, ok=True, now=11), breaker, 12) == "closed"
