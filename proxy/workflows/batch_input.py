"""Reading a batch file: JSONL, CSV or plain text -> one `BatchLine` per request.

A line that cannot be read becomes a `BatchLine` with a `problem` (reported as a failed
line with its number); only a file that cannot be read at all raises `InputError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "FORMATS",
    "BatchLine",
    "Format",
    "InputError",
    "detect_format",
    "read_lines",
]

Format = Literal["jsonl", "csv", "text"]
FORMATS: Final[tuple[Format, ...]] = ("jsonl", "csv", "text")
# Integer request fields: CSV cells and text carry strings, the API wants numbers.
_INT_FIELDS: Final = frozenset(
    {"n", "seed", "output_compression", "partial_images", "frame_count", "frame_duration_ms"}
)
# The batch always asks for a finished, inline image.
_DROPPED: Final = ("stream", "partial_images")
_TAG_SPLIT: Final = re.compile(r"\s*[,;]\s*")
_INTEGER: Final = re.compile(r"[+-]?\d+")


class InputError(Exception):
    """The file as a whole cannot be read (a usage error, exit status 2)."""


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of the batch. `body` is exactly what is sent (defaults merged in)."""

    line: int
    name: str | None = None
    tags: tuple[str, ...] = ()
    body: dict[str, object] = field(default_factory=dict)
    problem: str | None = None

    @property
    def prompt(self) -> str:
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    @property
    def n(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    @property
    def digest(self) -> str:
        """What resume matches on: the body sent, plus the name and tags that shape the output."""
        identity = {"body": self.body, "name": self.name, "tags": list(self.tags)}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


def detect_format(path: Path, override: str | None) -> Format:
    if override is not None:
        for known in FORMATS:
            if override == known:
                return known
        raise InputError(f"unknown format {override!r}; use one of {', '.join(FORMATS)}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "csv" if suffix == ".csv" else "text"


def read_lines(path: Path, fmt: Format, defaults: Mapping[str, object]) -> list[BatchLine]:
    """Every request in `path`, in file order, with `defaults` under each line's own fields."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "text": _text_rows}[fmt](text)
    return [
        _build(number, fields, defaults) if isinstance(fields, dict) else _bad(number, fields)
        for number, fields in rows
    ]


_Row = tuple[int, dict[str, object] | str]  # line number, fields or the problem


def _jsonl_rows(text: str) -> Iterator[_Row]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, f"invalid JSON: {exc.msg} (column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield number, f"expected a JSON object, got {_kind(value)}"
            continue
        yield number, value


def _text_rows(text: str) -> Iterator[_Row]:
    for number, raw in enumerate(text.splitlines(), start=1):
        prompt = raw.strip()
        if prompt and not prompt.startswith("#"):
            yield number, {"prompt": prompt}


def _csv_rows(text: str) -> Iterator[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _csv_header(reader)
    start = reader.line_num + 1
    for cells in reader:
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            yield number, f"row has {len(cells)} cells but the header names {len(header)}"
            continue
        yield number, _csv_fields(header, cells)


def _csv_header(reader: Iterator[list[str]]) -> list[str]:
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise InputError("the CSV file is empty; it needs a header row with 'prompt'") from None
    except csv.Error as exc:
        raise InputError(f"the CSV header cannot be read: {exc}") from None
    if "prompt" not in header:
        raise InputError(f"the CSV header has no 'prompt' column (it has: {', '.join(header)})")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise InputError(f"the CSV header repeats {', '.join(duplicated)}")
    return header


def _csv_fields(header: list[str], cells: list[str]) -> dict[str, object] | str:
    fields: dict[str, object] = {}
    for name, cell in zip(header, cells, strict=False):
        value = cell.strip()
        if not name or not value:
            continue
        if name in _INT_FIELDS:
            if not _INTEGER.fullmatch(value):
                return f"'{name}' must be an integer, got {value!r}"
            fields[name] = int(value)
        else:
            fields[name] = value
    return fields


def _build(number: int, fields: dict[str, object], defaults: Mapping[str, object]) -> BatchLine:
    body = {key: value for key, value in fields.items() if key not in ("name", "tags")}
    name, tags = fields.get("name"), fields.get("tags")
    if name is not None and not isinstance(name, str):
        return _bad(number, f"'name' must be a string, got {_kind(name)}")
    parsed_tags = _tags(tags)
    if isinstance(parsed_tags, str):
        return _bad(number, parsed_tags)
    prompt = body.get("prompt")
    if prompt is None:
        return _bad(number, "missing 'prompt'")
    if not isinstance(prompt, str):
        return _bad(number, f"'prompt' must be a string, got {_kind(prompt)}")
    merged = {**defaults, **{k: v for k, v in body.items() if v is not None}}
    for key in _DROPPED:
        merged.pop(key, None)
    merged["response_format"] = "b64_json"
    label = name.strip() if isinstance(name, str) and name.strip() else None
    return BatchLine(number, label, parsed_tags, merged)


def _tags(value: object) -> tuple[str, ...] | str:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(tag for tag in _TAG_SPLIT.split(value.strip()) if tag)
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return tuple(tag.strip() for tag in value if tag.strip())
    return f"'tags' must be a list of strings or a comma-separated string, got {_kind(value)}"


def _bad(number: int, problem: str) -> BatchLine:
    return BatchLine(number, problem=problem)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names: dict[type, str] = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)
