"""Values the config holds that plain TOML types do not: a `Secret`, dollars as micro-USD,
a list of regular expressions. Each reader raises `ConfigError` naming its path."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from policies.budget import MICROS_PER_USD
from policies.config_schema import ConfigError

__all__ = ["Secret", "check_patterns", "micros_to_usd", "usd_to_micros"]

_MAX_MICROS = 10**15  # SQLite integers are 64-bit


class Secret:
    """A credential: compared and used, never shown (`repr` and `str` mask it)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def usd_to_micros(value: Any, path: str) -> int:
    """TOML dollars (`25.5`) -> exact micro-USD (25_500_000)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected dollars as a number, got {value!r}")
    try:
        micros = Decimal(str(value)) * MICROS_PER_USD
    except InvalidOperation:
        raise ConfigError(path, f"not a number: {value!r}") from None
    if micros.is_nan():  # TOML has `nan`; comparing it would raise InvalidOperation
        raise ConfigError(path, f"not a number: {value!r}")
    if micros < 0 or micros != micros.to_integral_value():
        raise ConfigError(path, "must be >= 0 with at most 6 decimals")
    if micros > _MAX_MICROS:
        raise ConfigError(path, "must be at most $1,000,000,000")
    return int(micros)


def micros_to_usd(micros: int) -> float:
    """The inverse of `usd_to_micros`, as TOML writes it (exact up to 15 significant digits)."""
    return float(Decimal(micros) / MICROS_PER_USD)


def check_patterns(patterns: tuple[str, ...], path: str) -> None:
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{path}[{i}]", f"bad expression: {exc}") from None
