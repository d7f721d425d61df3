"""`[families.<name>]` tables -> `Family`: an operator's own family of request rules.

A table starts from a built-in family (`like = "gpt-image"`) and changes any of its fields,
or gives the required fields itself (prompt_max, n_max, sizes, default_size, qualities,
default_quality). Its models then follow its rules with no code: what the gateway accepts
(normalize), what the router gives them (routing), how a request made for another model is
put to them (translate) and how their answers look. Every error names its TOML path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal, cast

from policies.catalog import DEFAULT_FAMILIES, VIRTUAL, Family
from policies.catalog_config import FORMATS, _Getter
from policies.config_schema import ConfigError, did_you_mean

__all__ = ["parse_families"]

OPERATIONS = ("generate", "edit", "variation")
EDIT_FORMATS = frozenset({"png", "jpeg", "webp"})
_REQUIRED = ("prompt_max", "n_max", "sizes", "default_size", "qualities", "default_quality")
_INTS = (
    "prompt_max",
    "n_max",
    "edit_images_max",
    "edit_image_max_bytes",
    "flexible_multiple",
    "flexible_max_edge",
    "flexible_max_pixels",
    "flexible_min_pixels",
)
_BOOLS = ("gpt_fields", "edit_square_only", "revises_prompt", "nearest_size")
_STRINGS = ("default_size", "default_quality", "variation_prompt")
_LISTS = (
    "sizes",
    "qualities",
    "operations",
    "styles",
    "output_formats",
    "edit_formats",
    "input_fidelities",
    "extras",
)
_PAIRS = ("quality_map", "style_phrases")
_OTHER = ("like", "default_style", "default_response_format", "max_aspect_ratio")
_KNOWN = frozenset({*_INTS, *_BOOLS, *_STRINGS, *_LISTS, *_PAIRS, *_OTHER})


def parse_families(raw: Mapping[str, Any]) -> dict[str, Family]:
    """The built-in families plus the operator's; a built-in name cannot be redefined."""
    families = dict(DEFAULT_FAMILIES)
    for name, table in raw.items():
        path = f"families.{name}"
        if not isinstance(table, Mapping):
            raise ConfigError(path, 'must be a table ([families."<name>"])')
        if name in DEFAULT_FAMILIES:
            raise ConfigError(path, "is a built-in family; give yours another name")
        families[name] = _family(name, table)
    return families


def _family(name: str, table: Mapping[str, Any]) -> Family:
    path = f"families.{name}"
    for key in table:
        if key not in _KNOWN:
            raise ConfigError(f"{path}.{key}", "unknown key" + did_you_mean(key, sorted(_KNOWN)))
    get = _Getter(path, table)
    like = get.string("like", "")
    copyable = [n for n in DEFAULT_FAMILIES if n != VIRTUAL]
    if like and like not in copyable:
        raise ConfigError(f"{path}.like", f"must be one of {', '.join(copyable)}")
    if not like:
        missing = [key for key in _REQUIRED if key not in table]
        if missing:
            raise ConfigError(path, f"needs {', '.join(missing)} (or like = <a built-in family>)")
    changes: dict[str, Any] = {key: get.integer(key, 0) for key in _INTS if key in table}
    changes |= {key: get.boolean(key, False) for key in _BOOLS if key in table}
    changes |= {key: get.string(key, "") for key in _STRINGS if key in table}
    changes |= {key: get.strings(key) for key in _LISTS if key in table}
    changes |= {key: tuple(get.string_map(key).items()) for key in _PAIRS if key in table}
    if "default_style" in table:
        changes["default_style"] = get.optional_string("default_style")
    if "default_response_format" in table:
        changes["default_response_format"] = _response_format(get)
    if "max_aspect_ratio" in table:
        changes["max_aspect_ratio"] = _aspect_ratio(get)
    base = DEFAULT_FAMILIES[like] if like else _blank(name)
    return _checked(path, replace(base, name=name, **changes))


def _blank(name: str) -> Family:
    return Family(
        name=name,
        prompt_max=0,
        n_max=0,
        sizes=(),
        default_size="",
        qualities=(),
        default_quality="",
    )


def _response_format(get: _Getter) -> Literal["url", "b64_json"]:
    value = get.string("default_response_format", "")
    if value not in ("url", "b64_json"):
        raise ConfigError(f"{get.path}.default_response_format", "must be 'url' or 'b64_json'")
    return cast(Literal["url", "b64_json"], value)


def _aspect_ratio(get: _Getter) -> float | None:
    if get.table["max_aspect_ratio"] == "any":
        return None
    value = get.number("max_aspect_ratio", 0.0)
    if value < 1:
        raise ConfigError(f"{get.path}.max_aspect_ratio", "must be a number >= 1, or 'any'")
    return value


def _checked(path: str, family: Family) -> Family:
    problems = (
        ("prompt_max", family.prompt_max < 1, "must be at least 1"),
        ("n_max", family.n_max < 1, "must be at least 1"),
        ("qualities", not family.qualities, "must list at least one quality"),
        ("operations", not set(family.operations) <= set(OPERATIONS), _one_of(OPERATIONS)),
        ("output_formats", not set(family.output_formats) <= FORMATS, _one_of(FORMATS)),
        ("edit_formats", not set(family.edit_formats) <= EDIT_FORMATS, _one_of(EDIT_FORMATS)),
        (
            "default_size",
            bool(family.sizes) and family.default_size not in family.sizes,
            "must be one of its sizes",
        ),
        (
            "default_quality",
            family.default_quality not in family.qualities,
            "must be one of its qualities",
        ),
        (
            "default_style",
            family.default_style is not None and family.default_style not in family.styles,
            "must be one of its styles",
        ),
        ("flexible_multiple", family.flexible_multiple < 1, "must be at least 1"),
    )
    for key, failed, problem in problems:
        if failed:
            raise ConfigError(f"{path}.{key}", problem)
    return family


def _one_of(choices: tuple[str, ...] | frozenset[str]) -> str:
    return f"items must be among {', '.join(sorted(choices))}"
