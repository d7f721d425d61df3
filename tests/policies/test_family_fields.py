"""Each behaviour field of `Family`: a family with it set behaves so, one without it does not.

The families here are made up (copies of a built-in one under another name), so nothing can
lean on a family's name: only the field decides.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies.catalog import DEFAULT_FAMILIES, Catalog, Family, ModelSpec, Price
from policies.errors import NoRoute
from policies.models import ImageRequest
from policies.normalize import parse_generation
from policies.routing import RoutePolicy, plan_route
from policies.translate import translate
from proxy.ports import ProviderCall
from proxy.providers.placeholder import render

PLAIN = replace(DEFAULT_FAMILIES["diffusion"], name="plain", sizes=())  # every field unset


def catalog(family: Family, **spec: object) -> Catalog:
    """`m` (of `family`) and `other` (of the plain family), both served by provider `p`."""
    families = {family.name: family, PLAIN.name: PLAIN}
    price = Price(per_image={"*": 1})
    models = [
        ModelSpec(name="m", family=family.name, provider="p", price=price, **spec),  # type: ignore[arg-type]
        ModelSpec(name="other", family=PLAIN.name, provider="p", price=price),
    ]
    return Catalog.build(models, families)


def req(model: str = "m", **kw: object) -> ImageRequest:
    base: dict[str, object] = dict(
        operation="generate",
        model=model,
        prompt="a fox",
        size="1024x1024",
        quality="auto",
        output_format="png",
    )
    return ImageRequest(**{**base, **kw})  # type: ignore[arg-type]


def served(cat: Catalog, asked: str, by: str, request: ImageRequest) -> ImageRequest:
    return translate(request, cat.models[asked], cat.models[by])[0]


@pytest.mark.parametrize(("value", "expected"), [("url", "url"), (None, "b64_json")])
def test_default_response_format(value: str | None, expected: str) -> None:
    family = PLAIN if value is None else replace(PLAIN, default_response_format=value)
    cat = catalog(replace(family, name="f"))
    parsed = parse_generation({"model": "m", "prompt": "a fox"}, cat, default_model="m")
    assert parsed.delivery.response_format == expected
    asked = {"model": "m", "prompt": "a fox", "response_format": "b64_json"}
    assert parse_generation(asked, cat, default_model="m").delivery.response_format == "b64_json"


@pytest.mark.parametrize("revises", [True, False])
def test_revises_prompt(revises: bool) -> None:
    cat = catalog(replace(PLAIN, name="f", revises_prompt=revises))
    image = render(ProviderCall(req(size="256x256"), cat.models["m"], (0,), {}), 0)
    assert (image.revised_prompt is not None) is revises
    if revises:
        assert image.revised_prompt is not None and image.revised_prompt.startswith("a fox")


@pytest.mark.parametrize(("limit", "routes"), [(None, True), (2.0, False), (5.0, True)])
def test_max_aspect_ratio(limit: float | None, routes: bool) -> None:
    cat = catalog(replace(PLAIN, name="f", max_aspect_ratio=limit))
    wide = req(size="1024x256")  # 4:1
    policy = RoutePolicy(providers=frozenset({"p"}))
    if routes:
        assert plan_route(wide, cat, policy, images=1)[0].spec.name == "m"
    else:
        with pytest.raises(NoRoute, match="cannot make 1024x256"):
            plan_route(wide, cat, policy, images=1)
    assert plan_route(req(), cat, policy, images=1)[0].spec.name == "m"  # 1:1 always


@pytest.mark.parametrize(("nearest", "made_at"), [(True, "1536x1024"), (False, "1792x1024")])
def test_nearest_size(nearest: bool, made_at: str) -> None:
    sizes = ("auto", "1024x1024", "1536x1024", "1024x1536")
    cat = catalog(replace(PLAIN, name="f", sizes=sizes, nearest_size=nearest))
    upstream, target, exact = translate(
        req("other", size="1792x1024"), cat.models["other"], cat.models["m"]
    )
    assert upstream.size == made_at and target == (1792, 1024) and not exact


def test_quality_map() -> None:
    mapped = catalog(replace(PLAIN, name="f", quality_map=(("hd", "high"), ("*", "medium"))))
    assert served(mapped, "other", "m", req("other", quality="hd")).quality == "high"
    assert served(mapped, "other", "m", req("other", quality="low")).quality == "medium"
    passing = catalog(replace(PLAIN, name="f", quality_map=(("hd", "high"),)))
    assert served(passing, "other", "m", req("other", quality="low")).quality == "low"
    plain = catalog(replace(PLAIN, name="f"))  # the default: the model picks ("auto")
    assert served(plain, "other", "m", req("other", quality="hd")).quality == "auto"


def test_style_phrases() -> None:
    phrases = (("calm", "Style: calm."),)
    styled = catalog(replace(PLAIN, name="f", styles=("calm",), style_phrases=phrases))
    made = served(styled, "m", "other", req(style="calm"))
    assert made.prompt == "a fox Style: calm." and made.style is None
    unstyled = catalog(replace(PLAIN, name="f", styles=("calm",)))
    made = served(unstyled, "m", "other", req(style="calm"))
    assert made.prompt == "a fox" and made.style is None  # `other` takes no style


def test_a_family_with_styles_is_sent_the_style() -> None:
    cat = catalog(replace(PLAIN, name="f", styles=("calm",)))
    assert served(cat, "other", "m", req("other", style="calm")).style == "calm"


@pytest.mark.parametrize(("prompt", "operation"), [("Vary it.", "edit"), ("", "variation")])
def test_variation_prompt(prompt: str, operation: str) -> None:
    cat = catalog(replace(PLAIN, name="f", variation_prompt=prompt))
    made = served(cat, "m", "other", req(operation="variation", prompt=None, images=("k",)))
    assert made.operation == operation
    assert made.prompt == (prompt or None)


def test_a_spec_made_by_hand_reads_the_built_in_family() -> None:
    spec = ModelSpec(name="x", family="dall-e-3", provider="openai")
    assert spec.rules is DEFAULT_FAMILIES["dall-e-3"] and spec.rules.revises_prompt
    built = Catalog.build([spec]).models["x"]
    assert built == spec and built.rules is DEFAULT_FAMILIES["dall-e-3"]
