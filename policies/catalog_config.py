"""The catalog as data: `[models.<name>]` tables -> `Catalog`, every error naming its path.

The shell reads the TOML (the built-in `proxy/default_catalog.toml`, then the operator's
`[models]` tables merged over it key by key); this module only validates and builds. A model's
family is a built-in one or an operator's `[families.<name>]` (`policies.catalog_families`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.catalog import DEFAULT_FAMILIES, VIRTUAL, Catalog, Family, ModelSpec, Price
from policies.config_schema import ConfigError, did_you_mean

__all__ = ["CatalogError", "merge_models", "parse_catalog"]

STRENGTHS = frozenset({"text", "photo", "art", "product", "logo", "fast", "budget", "control"})
FORMATS = frozenset({"png", "jpeg", "webp", "gif", "svg"})


CatalogError = ConfigError  # the name older callers catch; one error for every section


def merge_models(
    defaults: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Operator tables win key by key; a model the defaults lack is added whole."""
    merged = {name: dict(table) for name, table in defaults.items()}
    for name, table in overrides.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"models.{name}", 'must be a table ([models."<name>"])')
        merged.setdefault(name, {}).update(table)
    return merged


_BOOLS = ("retired", "available", "edits", "masks", "seed", "transparent")
_STRINGS = (
    "provider",
    "upstream",
    "family",
    "description",
    "unavailable_reason",
    "licence",
    "owned_by",
)
_LISTS = ("aliases", "needs", "sizes", "formats", "strengths", "input_fidelities")
_KNOWN = frozenset(
    {
        *_BOOLS,
        *_STRINGS,
        *_LISTS,
        "successor",
        "aspect_ratios",
        "max_per_call",
        "safety_param",
        "safety_value",
        "price_image",
        "price_megapixel",
        "price_tokens",
        "output_tokens",
        "gpu_hour_usd_micros",
        "gpu_seconds_per_image",
    }
)


def parse_catalog(
    raw: Mapping[str, Mapping[str, Any]], families: Mapping[str, Family] = DEFAULT_FAMILIES
) -> Catalog:
    specs = [_model(name, table, families) for name, table in raw.items()]
    catalog = Catalog.build(specs, families)
    for spec in specs:
        path = f"models.{spec.name}"
        if spec.successor is not None and spec.successor not in catalog.models:
            raise ConfigError(f"{path}.successor", f"names unknown model {spec.successor!r}")
        if spec.retired and spec.successor is None:
            raise ConfigError(path, "a retired model needs a successor")
    return catalog


def _model(name: str, table: Mapping[str, Any], families: Mapping[str, Family]) -> ModelSpec:
    path = f"models.{name}"
    for key in table:
        if key not in _KNOWN:
            raise ConfigError(f"{path}.{key}", "unknown key" + did_you_mean(key, sorted(_KNOWN)))
    get = _Getter(path, table)
    family = get.string("family", "")
    if family not in families:
        raise ConfigError(f"{path}.family", f"must be one of {', '.join(families)}")
    strengths = get.strings("strengths")
    for item in (*strengths, *get.strings("needs")):
        if item not in STRENGTHS:
            raise ConfigError(f"{path}.strengths", f"unknown strength {item!r}")
    formats = get.strings("formats") or ("png",)
    if not set(formats) <= FORMATS:
        raise ConfigError(f"{path}.formats", f"formats are {', '.join(sorted(FORMATS))}")
    licence = get.string("licence", "commercial")
    if licence not in ("commercial", "non-commercial"):
        raise ConfigError(f"{path}.licence", "must be 'commercial' or 'non-commercial'")
    max_per_call = get.integer("max_per_call", 10)
    if max_per_call < 1:
        raise ConfigError(f"{path}.max_per_call", "must be at least 1")
    provider = get.string("provider", "")
    if family != VIRTUAL and not provider:
        raise ConfigError(f"{path}.provider", "is required")
    fidelities = get.strings("input_fidelities")
    return ModelSpec(
        name=name,
        family=family,
        provider=provider,
        upstream=get.string("upstream", name),
        owned_by=get.string("owned_by", provider or "imagegate"),
        aliases=get.strings("aliases"),
        description=get.string("description", ""),
        retired=get.boolean("retired", False),
        successor=get.optional_string("successor"),
        available=get.boolean("available", True),
        unavailable_reason=get.string("unavailable_reason", ""),
        needs=get.strings("needs"),
        sizes=get.strings("sizes"),
        aspect_ratios=get.string_map("aspect_ratios"),
        max_per_call=max_per_call,
        edits=get.boolean("edits", False),
        masks=get.boolean("masks", False),
        seed=get.boolean("seed", False),
        transparent=get.boolean("transparent", False),
        formats=formats,
        strengths=strengths,
        licence=licence,
        safety_param=get.optional_string("safety_param"),
        safety_value=table.get("safety_value"),
        input_fidelities=fidelities or None,
        price=_price(get),
    )


def _price(get: _Getter) -> Price:
    tokens = get.int_map("price_tokens")
    unknown = set(tokens) - {"text_in", "image_in", "image_out"}
    if unknown:
        raise ConfigError(f"{get.path}.price_tokens", f"unknown keys {sorted(unknown)}")
    seconds = get.number("gpu_seconds_per_image", 0.0)
    return Price(
        per_image=get.int_map("price_image"),
        per_megapixel=get.integer("price_megapixel", 0),
        tokens_text_in=tokens.get("text_in", 0),
        tokens_image_in=tokens.get("image_in", 0),
        tokens_image_out=tokens.get("image_out", 0),
        output_tokens=get.int_map("output_tokens"),
        gpu_hour=get.integer("gpu_hour_usd_micros", 0),
        gpu_seconds_per_image=seconds,
    )


class _Getter:
    def __init__(self, path: str, table: Mapping[str, Any]) -> None:
        self.path, self.table = path, table

    def _fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}.{key}", f"must be {what}, got {self.table[key]!r}")

    def string(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key, "") or None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def integer(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "a non-negative integer")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self._fail(key, "a non-negative number")
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.table.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise self._fail(key, "a table of strings")
        return dict(value)

    def int_map(self, key: str) -> dict[str, int]:
        value = self.table.get(key, {})
        ok = isinstance(value, Mapping) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
        )
        if not ok:
            raise self._fail(key, "a table of non-negative integers (micro-USD)")
        return dict(value)
