"""Image sizes: the fixed lists of the older models, the flexible WxH rule of gpt-image-2."""

from __future__ import annotations

import re

from policies.catalog import Family
from policies.errors import InvalidRequest

__all__ = ["check_size", "dimensions", "parse_size"]

_WXH = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")


def parse_size(size: str) -> tuple[int, int] | None:
    """The one reader of size strings: '1024x1536' -> (1024, 1536); 'auto' (the model's
    choice) -> None. Raises ValueError on anything else."""
    if size == "auto":
        return None
    match = _WXH.fullmatch(size)
    if match is None:
        raise ValueError(f"size must be 'auto' or 'WIDTHxHEIGHT', not {size[:40]!r}")
    return int(match[1]), int(match[2])


def dimensions(size: str, *, auto: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    """Pixel dimensions of a size string; `auto` stands for the model's choice."""
    parsed = parse_size(size)
    return auto if parsed is None else parsed


def check_size(size: str, family: Family) -> None:
    if family.sizes:
        if size not in family.sizes:
            allowed = ", ".join(f"'{s}'" for s in family.sizes)
            raise InvalidRequest(
                f"Invalid value for 'size': '{size[:40]}'. {family.name} supports {allowed}.",
                param="size",
                code="invalid_size",
            )
        return
    try:
        parsed = parse_size(size)
    except ValueError:
        raise InvalidRequest(
            f"Invalid value for 'size': '{size[:40]}'. Use 'auto' or 'WIDTHxHEIGHT', "
            "for example '1536x1024'.",
            param="size",
            code="invalid_size",
        ) from None
    if parsed is not None:
        _check_flexible(*parsed, family)


def _check_flexible(width: int, height: int, family: Family) -> None:
    m = family.flexible_multiple
    problem = None
    if width % m or height % m:
        problem = f"both sides must be multiples of {m}"
    elif max(width, height) > family.flexible_max_edge:
        problem = f"the longer side must be at most {family.flexible_max_edge}"
    elif max(width, height) > 3 * min(width, height):
        problem = "the aspect ratio must be between 1:3 and 3:1"
    elif width * height > family.flexible_max_pixels:
        problem = f"at most {family.flexible_max_pixels} pixels are allowed"
    elif width * height < family.flexible_min_pixels:
        problem = f"at least {family.flexible_min_pixels} pixels are needed"
    if problem:
        raise InvalidRequest(
            f"Invalid value for 'size': '{width}x{height}': {problem}.",
            param="size",
            code="invalid_size",
        )
