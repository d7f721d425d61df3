"""Load the model catalog: the packaged defaults, with the operator's [models] over them."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from policies.catalog import Catalog
from policies.catalog_config import merge_models, parse_catalog

__all__ = ["default_models", "load_catalog"]


@cache
def _default_text() -> str:
    return resources.files("proxy").joinpath("default_catalog.toml").read_text(encoding="utf-8")


def default_models() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = tomllib.loads(_default_text())["models"]
    return models


def load_catalog(overrides: Mapping[str, Any] | None = None) -> Catalog:
    """Raises `policies.catalog_config.CatalogError` naming the bad `models.<name>.<key>`."""
    return parse_catalog(merge_models(default_models(), overrides or {}))
