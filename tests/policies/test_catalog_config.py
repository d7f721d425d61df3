"""`policies.catalog_config`: every malformed `[models.<name>]` value is refused with its path."""

from __future__ import annotations

from typing import Any

import pytest

from policies.catalog_config import CatalogError, merge_models, parse_catalog

BASE: dict[str, Any] = {
    "provider": "replicate",
    "upstream": "black-forest-labs/flux-schnell",
    "family": "diffusion",
    "strengths": ["fast"],
    "formats": ["png", "jpeg"],
    "aspect_ratios": {"1024x1024": "1:1"},
    "price_image": {"*": 3_000},
}


def parse(**changes: Any) -> Any:
    return parse_catalog({"m": {**BASE, **changes}})


def test_a_valid_table_builds() -> None:
    spec = parse(price_tokens={"text_in": 5}, gpu_seconds_per_image=1.5).models["m"]
    assert spec.provider == "replicate" and spec.formats == ("png", "jpeg")
    assert spec.price.tokens_text_in == 5 and spec.price.gpu_seconds_per_image == 1.5


@pytest.mark.parametrize(
    ("changes", "path", "problem"),
    [
        ({"colour": "red"}, "models.m.colour", "unknown key"),
        ({"family": "nope"}, "models.m.family", "must be one of"),
        ({"strengths": ["speed"]}, "models.m.strengths", "unknown strength 'speed'"),
        ({"needs": ["magic"]}, "models.m.strengths", "unknown strength 'magic'"),
        ({"formats": ["bmp"]}, "models.m.formats", "formats are"),
        ({"licence": "gpl"}, "models.m.licence", "commercial"),
        ({"max_per_call": 0}, "models.m.max_per_call", "at least 1"),
        ({"provider": ""}, "models.m.provider", "is required"),
        ({"price_tokens": {"text_out": 1}}, "models.m.price_tokens", "unknown keys"),
        ({"description": 5}, "models.m.description", "a string"),
        ({"edits": "yes"}, "models.m.edits", "true or false"),
        ({"max_per_call": True}, "models.m.max_per_call", "non-negative integer"),
        ({"price_megapixel": -1}, "models.m.price_megapixel", "non-negative integer"),
        ({"gpu_seconds_per_image": "1"}, "models.m.gpu_seconds_per_image", "non-negative number"),
        ({"aliases": "m2"}, "models.m.aliases", "a list of strings"),
        ({"aspect_ratios": {"1024x1024": 1}}, "models.m.aspect_ratios", "a table of strings"),
        ({"price_image": {"*": 1.5}}, "models.m.price_image", "non-negative integers"),
        ({"successor": "ghost"}, "models.m.successor", "unknown model 'ghost'"),
        ({"retired": True}, "models.m", "needs a successor"),
    ],
)
def test_malformed_values_name_their_path(changes: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse(**changes)
    assert caught.value.path == path and problem in caught.value.problem


def test_overrides_merge_key_by_key() -> None:
    merged = merge_models({"m": BASE}, {"m": {"max_per_call": 2}, "new": {"family": "virtual"}})
    assert merged["m"]["max_per_call"] == 2 and merged["m"]["provider"] == "replicate"
    assert merged["new"] == {"family": "virtual"}
    assert BASE.get("max_per_call") is None  # the defaults are not changed


def test_an_override_that_is_not_a_table() -> None:
    with pytest.raises(CatalogError) as caught:
        merge_models({"m": BASE}, {"m": "flux"})
    assert caught.value.path == "models.m"
