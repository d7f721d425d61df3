"""`policies.catalog_families`: an operator's `[families.<name>]`, every error with its path."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from policies.catalog import DEFAULT_FAMILIES
from policies.catalog_config import CatalogError, parse_catalog
from policies.catalog_families import parse_families

OWN: dict[str, Any] = {
    "prompt_max": 100,
    "n_max": 2,
    "sizes": ["512x512"],
    "default_size": "512x512",
    "qualities": ["draft"],
    "default_quality": "draft",
}


def test_a_copy_changes_only_what_it_names() -> None:
    table = {"like": "dall-e-3", "revises_prompt": False, "quality_map": {"*": "hd"}}
    family = parse_families({"x": table})["x"]
    expected = replace(
        DEFAULT_FAMILIES["dall-e-3"], name="x", revises_prompt=False, quality_map=(("*", "hd"),)
    )
    assert family == expected


def test_a_family_of_its_own_takes_every_field() -> None:
    table = {
        **OWN,
        "operations": ["generate", "edit"],
        "styles": ["calm"],
        "default_style": "calm",
        "style_phrases": {"calm": "Calmly."},
        "default_response_format": "url",
        "max_aspect_ratio": 3,
        "nearest_size": True,
        "variation_prompt": "Vary.",
        "gpt_fields": True,
    }
    family = parse_families({"x": table})["x"]
    assert family.max_aspect_ratio == 3.0 and family.default_response_format == "url"
    assert family.style_phrases == (("calm", "Calmly."),) and family.default_style == "calm"
    assert parse_families({"x": {**OWN, "max_aspect_ratio": "any"}})["x"].max_aspect_ratio is None
    assert parse_families({}) == dict(DEFAULT_FAMILIES)


def test_models_of_an_operator_family_build() -> None:
    families = parse_families({"x": {"like": "gpt-image"}})
    catalog = parse_catalog({"m": {"family": "x", "provider": "openai"}}, families)
    assert catalog.models["m"].rules is families["x"]


@pytest.mark.parametrize(
    ("table", "path", "problem"),
    [
        ({"like": "gpt-image", "colour": 1}, "families.x.colour", "unknown key"),
        ({"like": "auto"}, "families.x.like", "must be one of"),
        ({"prompt_max": 10}, "families.x", "needs n_max, sizes"),
        ({**OWN, "default_size": "1024x1024"}, "families.x.default_size", "its sizes"),
        ({**OWN, "default_quality": "hd"}, "families.x.default_quality", "its qualities"),
        ({**OWN, "default_style": "calm"}, "families.x.default_style", "its styles"),
        ({**OWN, "operations": ["dream"]}, "families.x.operations", "must be among"),
        ({**OWN, "output_formats": ["bmp"]}, "families.x.output_formats", "must be among"),
        ({**OWN, "edit_formats": ["gif"]}, "families.x.edit_formats", "must be among"),
        ({**OWN, "n_max": 0}, "families.x.n_max", "at least 1"),
        ({**OWN, "n_max": "2"}, "families.x.n_max", "non-negative integer"),
        ({**OWN, "revises_prompt": "yes"}, "families.x.revises_prompt", "true or false"),
        ({**OWN, "default_response_format": "xml"}, "families.x.default_response_format", "url"),
        ({**OWN, "max_aspect_ratio": 0.5}, "families.x.max_aspect_ratio", ">= 1, or 'any'"),
        ({**OWN, "quality_map": {"hd": 1}}, "families.x.quality_map", "a table of strings"),
        ({**OWN, "sizes": "512x512"}, "families.x.sizes", "a list of strings"),
    ],
)
def test_malformed_families_name_their_path(table: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_families({"x": table})
    assert caught.value.path == path and problem in caught.value.problem


def test_a_built_in_name_is_not_redefined() -> None:
    with pytest.raises(CatalogError, match="built-in family") as caught:
        parse_families({"gpt-image": {"like": "gpt-image"}})
    assert caught.value.path == "families.gpt-image"
