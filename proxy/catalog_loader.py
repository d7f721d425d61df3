"""Load the model catalog: the packaged defaults, with the operator's [models] over them and
the operator's [families] beside the built-in ones."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from policies.catalog import Catalog
from policies.catalog_config import merge_models, parse_catalog
from policies.catalog_families import parse_families

__all__ = ["default_models", "load_catalog"]


@cache
def _default_text() -> str:
    return resources.files("proxy").joinpath("default_catalog.toml").read_text(encoding="utf-8")


def default_models() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = tomllib.loads(_default_text())["models"]
    return models


def load_catalog(
    overrides: Mapping[str, Any] | None = None, families: Mapping[str, Any] | None = None
) -> Catalog:
    """Raises `ConfigError` naming the bad `models.<name>.<key>` (or `families.<name>.<key>`)."""
    models = merge_models(default_models(), overrides or {})
    return parse_catalog(models, parse_families(families or {}))
