"""Typed reads of a wire body, JSON or multipart, with OpenAI-style errors.

A JSON body carries real types; a multipart form carries only strings, which the SDK
writes as decimal ints and lowercase `true`/`false`. `Fields` reads both the same way and
remembers which names it read, so whatever is left over is an unknown parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from policies.errors import InvalidRequest

__all__ = ["EDIT_FIELDS", "GENERATION_FIELDS", "VARIATION_FIELDS", "Fields"]

_MISSING: Final = object()

# The fields each route knows (anything else is an unknown parameter).
_DELIVERY = frozenset(
    {"n", "response_format", "stream", "partial_images", "user", "safety_identifier"}
)
_PIXELS = frozenset(
    {
        "model",
        "prompt",
        "size",
        "quality",
        "style",
        "background",
        "output_format",
        "output_compression",
        "moderation",
        "seed",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "svg",
    }
)
GENERATION_FIELDS = _DELIVERY | _PIXELS
EDIT_FIELDS = (GENERATION_FIELDS - {"style", "moderation"}) | {"input_fidelity"}
VARIATION_FIELDS = frozenset({"model", "n", "response_format", "size", "user", "seed"})


class Fields:
    def __init__(self, raw: Mapping[str, object], *, form: bool) -> None:
        self._raw = raw
        self._form = form
        self._read: set[str] = set()

    def present(self, name: str) -> bool:
        """True when the client gave `name` a value (JSON null means not given)."""
        return self._raw.get(name) is not None

    def _get(self, name: str) -> object:
        self._read.add(name)
        value = self._raw.get(name, _MISSING)
        return _MISSING if value is None else value

    def string(
        self, name: str, *, choices: tuple[str, ...] | None = None, allow_empty: bool = False
    ) -> str | None:
        """The field's text, or None when not given. An empty string is not "not given"
        (a default would be spent on in its place): it is refused unless `allow_empty`."""
        value = self._get(name)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Invalid type for '{name}': expected a string, but got {_kind(value)}.",
                param=name,
                code="invalid_type",
            )
        if not value and not allow_empty:
            raise InvalidRequest(
                f"Invalid value for '{name}': an empty string. Leave '{name}' out (or send "
                "null) to get its default.",
                param=name,
            )
        if choices is not None and value not in choices:
            allowed = ", ".join(f"'{c}'" for c in choices)
            raise InvalidRequest(
                f"Invalid value for '{name}': '{_clip(value)}'. Supported values are: {allowed}.",
                param=name,
            )
        return value

    def integer(self, name: str, *, low: int, high: int) -> int | None:
        value = self._get(name)
        if value is _MISSING:
            return None
        if self._form and isinstance(value, str) and _is_decimal(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(
                f"Invalid type for '{name}': expected an integer, but got {_kind(value)}.",
                param=name,
                code="invalid_type",
            )
        if not low <= value <= high:
            raise InvalidRequest(
                f"Invalid value for '{name}': {value} is out of range; "
                f"it must be between {low} and {high}.",
                param=name,
            )
        return value

    def boolean(self, name: str) -> bool | None:
        value = self._get(name)
        if value is _MISSING:
            return None
        if self._form and value in ("true", "false"):
            return value == "true"
        if not isinstance(value, bool):
            raise InvalidRequest(
                f"Invalid type for '{name}': expected a boolean, but got {_kind(value)}.",
                param=name,
                code="invalid_type",
            )
        return value

    def json_value(self, name: str) -> str | None:
        """Any JSON value, returned as canonical JSON text (for rarely used nested fields)."""
        value = self._get(name)
        if value is _MISSING:
            return None
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"Invalid value for '{name}'.", param=name) from exc

    def reject_unknown(self, allowed: frozenset[str]) -> None:
        """Raise for the first name that is neither known to the API nor was read."""
        for name in sorted(self._raw):
            if name not in allowed and name not in self._read:
                raise InvalidRequest(
                    f"Unknown parameter: '{_clip(name)}'.", param=name, code="unknown_parameter"
                )

    def unsupported(self, name: str, why: str) -> None:
        if self.present(name):
            raise InvalidRequest(
                f"The parameter '{name}' is not supported {why}.",
                param=name,
                code="unsupported_parameter",
            )
        self._read.add(name)


def _is_decimal(text: str) -> bool:
    body = text[1:] if text[:1] == "-" else text
    return 0 < len(body) <= 18 and body.isascii() and body.isdigit()


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for typ, label in names.items():
        if isinstance(value, typ):
            return label
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another type"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
