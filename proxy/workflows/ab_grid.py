"""The variation x model grid of `imagegate ab`: the plan (flags or an experiment file), and
each cell generated through the gateway with its images written beside the contact sheet."""

from __future__ import annotations

import asyncio
import hashlib
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from policies.budget import format_usd
from proxy.workflows.gateway import GatewayClient
from proxy.workflows.manifest import file_extension, slugify, write_bytes_atomic
from proxy.workflows.outcomes import LineFailed, Made

__all__ = ["Cell", "CellImage", "CellResult", "Plan", "PlanError", "load_file", "run_grid"]

_FILE_KEYS: Final = frozenset({"base", "variations", "models", "size", "quality", "n"})


class PlanError(Exception):
    """An unusable experiment file or set of options (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Plan:
    base: str
    variations: tuple[str, ...]
    models: tuple[str | None, ...] = (None,)  # None: the gateway's default model
    size: str | None = None
    quality: str | None = None
    n: int = 1

    def cells(self) -> list[Cell]:
        rows = self.variations or ("",)
        return [
            Cell(row, col, variation, self.prompt(variation), model)
            for row, variation in enumerate(rows)
            for col, model in enumerate(self.models)
        ]

    def prompt(self, variation: str) -> str:
        """The prompt of a cell: "base, variation"."""
        return ", ".join(part for part in (self.base.strip(), variation.strip()) if part)

    def body(self, cell: Cell) -> dict[str, object]:
        body: dict[str, object] = {"prompt": cell.prompt, "n": self.n}
        body.update({"response_format": "b64_json"})
        optional = {"model": cell.model, "size": self.size, "quality": self.quality}
        body.update({key: value for key, value in optional.items() if value is not None})
        return body


@dataclass(frozen=True, slots=True)
class Cell:
    row: int
    col: int
    variation: str
    prompt: str
    model: str | None


@dataclass(frozen=True, slots=True)
class CellImage:
    file: str
    sha256: str
    revised_prompt: str | None


@dataclass(slots=True)
class CellResult:
    cell: Cell
    images: list[CellImage] = field(default_factory=list)
    served_model: str | None = None
    provider: str | None = None
    cost_micros: int = 0
    cache: str | None = None
    request_id: str | None = None
    request_key: str | None = None
    attempts: int = 0
    error: str | None = None
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        cell = self.cell
        return {
            "row": cell.row,
            "column": cell.col,
            "variation": cell.variation,
            "prompt": cell.prompt,
            "model": cell.model,
            "served_model": self.served_model,
            "provider": self.provider,
            "images": [
                {"file": i.file, "sha256": i.sha256, "revised_prompt": i.revised_prompt}
                for i in self.images
            ],
            "cost_usd": format_usd(self.cost_micros),
            "cache": self.cache,
            "request_id": self.request_id,
            "request_key": self.request_key,
            "attempts": self.attempts,
            "error": self.error,
            "status": self.status,
        }


def load_file(path: Path) -> dict[str, Any]:
    """An experiment file: TOML (`.toml`) or JSON, with base, variations, models, size,
    quality and n. Unknown keys are refused, so that a typo does not go unnoticed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise PlanError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: the experiment must be a table/object")
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise PlanError(f"{path}: unknown keys {', '.join(unknown)} (know: {sorted(_FILE_KEYS)})")
    for key, kind in (("base", str), ("size", str), ("quality", str), ("n", int)):
        if key in raw and not isinstance(raw[key], kind):
            raise PlanError(f"{path}: '{key}' must be {kind.__name__}")
    for key in ("variations", "models"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PlanError(f"{path}: '{key}' must be a list of strings")
    return raw


Report = Callable[[CellResult], None]


async def run_grid(
    plan: Plan, gateway: GatewayClient, out: Path, *, concurrency: int, done: Report
) -> list[CellResult]:
    """Every cell, `concurrency` at a time; images written into `out` as they come."""
    gate = asyncio.Semaphore(concurrency)

    async def one(cell: Cell) -> CellResult:
        async with gate:
            result = await _generate(plan, gateway, out, cell)
        done(result)
        return result

    return list(await asyncio.gather(*(one(cell) for cell in plan.cells())))


async def _generate(plan: Plan, gateway: GatewayClient, out: Path, cell: Cell) -> CellResult:
    result = CellResult(cell)
    try:
        made = await gateway.generate(plan.body(cell))
    except LineFailed as exc:
        result.error, result.status, result.attempts = str(exc), exc.status, exc.attempts
        result.request_id = exc.request_id
        return result
    _fill(result, made)
    names = _file_names(cell, made)
    await asyncio.to_thread(_write_images, out, names, made.images)
    result.images = [
        CellImage(name, hashlib.sha256(data).hexdigest(), revised)
        for name, data, revised in zip(names, made.images, made.revised_prompts, strict=True)
    ]
    return result


def _fill(result: CellResult, made: Made) -> None:
    headers: Mapping[str, str] = made.headers
    result.served_model = headers.get("x-imagegate-model") or result.cell.model
    result.provider = headers.get("x-imagegate-provider")
    result.cost_micros = made.cost_micros
    result.cache = headers.get("x-cache")
    result.request_id = headers.get("x-request-id")
    result.request_key = headers.get("x-cache-key")
    result.attempts = made.attempts


def _file_names(cell: Cell, made: Made) -> list[str]:
    """`02-dark-theme-neon-accents--flux-schnell.png` (`-2`, `-3`... when n > 1)."""
    stem = f"{cell.row + 1:02d}-{slugify(cell.variation or 'base', 40)}"
    stem += f"--{slugify(cell.model or 'default-model', 32)}"
    many = len(made.images) > 1
    return [
        f"{stem}{f'-{i + 1}' if many else ''}.{file_extension(data, made.output_format)}"
        for i, data in enumerate(made.images)
    ]


def _write_images(out: Path, names: Sequence[str], images: Sequence[bytes]) -> None:
    for name, data in zip(names, images, strict=True):
        write_bytes_atomic(out / name, data)
