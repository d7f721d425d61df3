"""The config file as TOML tables, its string values read through the environment.

A string may hold `${VAR}` (an unset VAR reads as ""), `${VAR:-default}`, or `${VAR:?message}`:
required, so an unset or empty VAR stops the load, naming the key that asked for it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policies.config_schema import ConfigError

__all__ = ["expand_environment", "read_toml"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}") from None


def expand_environment(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """`value` (a TOML document or any part of it) with every `${...}` replaced."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: _variable(m, environ, path), value)
    if isinstance(value, dict):
        return {k: expand_environment(v, environ, _join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_environment(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _variable(match: re.Match[str], environ: Mapping[str, str], path: str) -> str:
    value = environ.get(match[1], "")
    if match[2] == "?":
        if not value:
            raise ConfigError(path, f"${match[1]} is required: {match[3] or 'set it'}")
        return value
    return value if match[1] in environ else match[3] or ""
