"""The config schema: each settings class is a frozen dataclass, and its fields are the schema.

A field's type says what its TOML value must be: `bool`, `int`, `float`, `str`, a `Literal`
(one of its values), `tuple[str, ...]` (a list of strings), any of these `| None` (absent:
the default), or a class built from a string (`Secret`, `Path`). `setting(...)` adds what a
type cannot say: the TOML name when it is not the attribute's, a range, a check, a reader of
its own (dollars -> micro-USD), a hint for messages. `read_table` reads one TOML table into
its class: an unknown key is refused with the nearest known name, a value with its path and
what would do, a missing required key with its path. A key the table leaves out keeps the
class default, which is how a config file holds only what it changes.

Every problem is one `ConfigError(path, problem)`; the shell adds the file it read.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "ConfigError",
    "FieldSpec",
    "Rule",
    "did_you_mean",
    "expect_table",
    "fields_of",
    "read_table",
    "refuse_unknown",
    "setting",
]

T = TypeVar("T")
Reader = Callable[[Any, str], Any]  # (TOML value, its path) -> the field's value; raises


class ConfigError(ValueError):
    """One bad config value: `path` is where it sits in TOML (`providers.openai.api_key`,
    `keys[2].budget_usd`), `problem` what is wrong and what would do; `source` the file."""

    def __init__(self, path: str, problem: str, *, source: str = "") -> None:
        self.path, self.problem, self.source = path, problem, source
        super().__init__(": ".join(part for part in (source, path, problem) if part))

    def within(self, source: str) -> ConfigError:
        """The same problem, said of the file `source`."""
        return ConfigError(self.path, self.problem, source=source)


@dataclass(frozen=True, slots=True)
class Rule:
    """What a field's type cannot say. `low`/`high` bound a number (inclusive), `above` from
    below (exclusive); `problem` replaces the generated words when one is out of range."""

    toml: str = ""  # the TOML key, when it is not the attribute's name
    aliases: tuple[str, ...] = ()  # other keys read into the same field (api_token)
    hint: str = ""  # what a good value looks like, for "expected <hint>, got ..."
    low: float | None = None
    high: float | None = None
    above: float | None = None
    problem: str = ""
    check: Reader | None = None  # (value read, path) -> None; raises ConfigError
    read: Reader | None = None  # replaces the type's own reading (dollars -> micro-USD)
    show: Callable[[Any], Any] | None = None  # the inverse of `read`, for writing TOML back
    fixed: bool = False  # not a TOML key (a table's own name); the reader's caller gives it


def setting(default: Any = dataclasses.MISSING, *, repr: bool = True, **rule: Any) -> Any:
    """A dataclass field with a `Rule` (`setting(8080, low=0, high=65535)`)."""
    return dataclasses.field(default=default, repr=repr, metadata={"rule": Rule(**rule)})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    attr: str
    toml: str
    type: Any
    rule: Rule
    required: bool

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.toml, *self.rule.aliases)


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The schema of a settings class, in field order (worked out once per class)."""
    return _fields_of(cls)


@cache
def _fields_of(cls: Any) -> tuple[FieldSpec, ...]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("rule", Rule())
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(FieldSpec(f.name, rule.toml or f.name, hints[f.name], rule, required))
    return tuple(out)


def read_table(cls: type[T], raw: object, path: str, **fixed: Any) -> T:
    """`raw` (one TOML table) as `cls`; `fixed` gives the fields that are not TOML keys."""
    table = expect_table(raw, path)
    specs = [s for s in fields_of(cls) if not s.rule.fixed]
    by_key = {key: spec for spec in specs for key in spec.keys}
    refuse_unknown(table, path, [spec.toml for spec in specs], accepted=by_key)
    values = dict(fixed)
    for key, value in table.items():
        spec = by_key[key]
        read = _read_value(spec, value, f"{path}.{key}")
        if spec.attr in values and values[spec.attr] and read:  # api_key and api_token
            other = next(k for k in spec.keys if k != key and k in table)
            raise ConfigError(f"{path}.{key}", f"give {other} or {key}, not both")
        if read or spec.attr not in values:
            values[spec.attr] = read
    for spec in specs:
        if spec.required and spec.attr not in values:
            hint = spec.rule.problem or spec.rule.hint
            raise ConfigError(f"{path}.{spec.toml}", "is required" + (f": {hint}" if hint else ""))
    return cls(**values)


def expect_table(raw: object, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        shape = "a table" if path.endswith("]") else f"a table ([{path}])"
        raise ConfigError(path, f"must be {shape}, got {_shown(raw)}")
    return raw


def refuse_unknown(
    table: Mapping[str, Any],
    path: str,
    known: Iterable[str],
    *,
    accepted: Mapping[str, Any] | None = None,
) -> None:
    """An unknown key is a typo more often than not: name the nearest known one."""
    names = list(known)
    for key in table:
        if key not in (accepted if accepted is not None else names):
            where = f"{path}.{key}" if path else key
            what = "key" if path else "section"
            raise ConfigError(where, f"unknown {what}{did_you_mean(key, names)}")


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """The tail of an unknown-key message: "; did you mean 'port'?", else "; known: ..."."""
    names = list(names)
    close = difflib.get_close_matches(word, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"


def _read_value(spec: FieldSpec, value: Any, path: str) -> Any:
    rule = spec.rule
    read = rule.read or (lambda v, p: _typed(spec.type, v, p, rule.hint))
    out = read(value, path)
    if isinstance(out, int | float) and not isinstance(out, bool):
        _check_range(out, rule, path)
    if rule.check is not None:
        rule.check(out, path)
    return out


def _typed(typ: Any, value: Any, path: str, hint: str) -> Any:
    origin, args = get_origin(typ), get_args(typ)
    if origin in (Union, types.UnionType):
        (inner,) = (a for a in args if a is not type(None))
        return _typed(inner, value, path, hint)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(path, f"expected one of {choices}, got {_shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, args[0]) for v in value):
            raise ConfigError(path, f"expected {hint or 'a list of strings'}, got {_shown(value)}")
        return tuple(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(path, f"expected {hint or 'a number'}, got {_shown(value)}")
        return float(value)
    if typ in (bool, int, str):
        if isinstance(value, bool) is not (typ is bool) or not isinstance(value, typ):
            raise ConfigError(path, f"expected {hint or _NAMES[typ]}, got {_shown(value)}")
        return value
    if not isinstance(value, str):  # a class built from a string: Secret, Path
        raise ConfigError(path, f"expected {hint or 'a string'}, got {_kind(value)}")
    return typ(value)


_NAMES = {bool: "true or false", int: "a whole number", str: "a string"}


def _check_range(value: float, rule: Rule, path: str) -> None:
    low, high, above = rule.low, rule.high, rule.above
    if (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (above is None or value > above)
    ):
        return
    if rule.problem:
        raise ConfigError(path, f"{rule.problem}, got {value}")
    bounds = [f"at least {_num(low)}"] if low is not None else []
    bounds += [f"more than {_num(above)}"] if above is not None else []
    bounds += [f"at most {_num(high)}"] if high is not None else []
    raise ConfigError(path, f"must be {' and '.join(bounds)}, got {value}")


def _num(bound: float | None) -> str:
    return f"{bound:g}"


def _shown(value: object) -> str:
    """A value as messages show it: short, so a pasted secret is not echoed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{_kind(value)} of {len(text)} characters"


def _kind(value: object) -> str:
    """What TOML calls the value's type, not the value (which may be a secret)."""
    for typ, name in _KINDS:
        if isinstance(value, typ):
            return name
    return type(value).__name__


_KINDS = (
    (bool, "true or false"),
    (int, "a whole number"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a table"),
)
