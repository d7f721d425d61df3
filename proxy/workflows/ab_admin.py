"""The admin side of `imagegate ab`: turn a grid into an experiment, print an experiment's
report. Both go to the gateway's `/admin/ab` routes (with the admin key) through `GatewayClient`."""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from proxy.workflows.ab_grid import CellResult
from proxy.workflows.gateway import GatewayClient, Refused, Unreachable

__all__ = ["AdminError", "create_experiment", "experiment_body", "fetch_report", "print_report"]

_LABEL_MAX: Final = 200


class AdminError(Exception):
    """The gateway refused, or could not be reached."""


def experiment_body(name: str, results: Sequence[CellResult]) -> dict[str, Any]:
    """Variants A, B, C... from the first model's column, one per variation (its first image);
    the first variation is the control."""
    column = sorted((r for r in results if r.cell.col == 0), key=lambda r: r.cell.row)
    if len(column) > len(string.ascii_uppercase):
        raise AdminError(f"an experiment takes at most 26 variants, the grid has {len(column)}")
    if len(column) < 2:
        raise AdminError("an experiment needs at least 2 variations")
    missing = [r.cell.row + 1 for r in column if not r.images]
    if missing:
        raise AdminError(f"variation(s) {missing} of the first model have no image")
    return {
        "name": name,
        "variants": [
            {
                "id": string.ascii_uppercase[r.cell.row],
                "image": r.images[0].sha256,
                "label": (r.cell.variation or r.cell.prompt)[:_LABEL_MAX],
                "weight": 1,
                "control": r.cell.row == 0,
            }
            for r in column
        ],
    }


async def _call(
    gateway: GatewayClient, method: str, path: str, payload: object = None
) -> dict[str, Any]:
    try:
        body = await gateway.call_json(method, path, payload=payload)
    except Refused as exc:
        if exc.status == 401:
            raise AdminError(
                "the gateway wants the admin key: --admin-key or $IMAGEGATE_ADMIN_KEY"
            ) from None
        raise AdminError(f"HTTP {exc.status}: {exc.message}") from None
    except Unreachable as exc:
        raise AdminError(f"cannot reach {exc.url}: {exc.reason}") from None
    return body if isinstance(body, dict) else {}


async def create_experiment(gateway: GatewayClient, body: dict[str, Any]) -> None:
    await _call(gateway, "POST", "/admin/ab", body)


async def fetch_report(gateway: GatewayClient, name: str) -> dict[str, Any]:
    return await _call(gateway, "GET", f"/admin/ab/{quote(name, safe='')}")


def _rate(value: object) -> str:
    return f"{value * 100:.2f}%" if isinstance(value, int | float) else "-"


def _variant(stat: dict[str, Any], winner: object) -> str:
    marks = " ctrl" if stat.get("control") else ""
    return f"{stat['id']}{marks}{' ★' if stat['id'] == winner else ''}"


def print_report(console: Console, report: dict[str, Any]) -> None:
    """The variants and their tests against the control as a table that fits 80 columns
    (numbers only; the labels follow it, one a line), then the verdict. Every string from
    the gateway is printed as text, never read as rich markup."""
    tests = {c["variant"]: c for c in report.get("comparisons", [])}
    table = Table(title=escape(f"experiment {report.get('name')}"), title_justify="left")
    for column in ("variant", "impressions", "conversions", "rate", "lift", "z", "p"):
        justify: JustifyMethod = "left" if column == "variant" else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    stats = report.get("stats", [])
    for stat in stats:
        test = tests.get(stat["id"])
        lift = None if test is None else test["lift"]
        table.add_row(
            escape(_variant(stat, report.get("winner"))),
            f"{stat['impressions']:,}",
            f"{stat['conversions']:,}",
            _rate(stat.get("rate")),
            "" if lift is None else f"{lift * 100:+.1f}%",
            "" if test is None else f"{test['z']:+.2f}",
            "" if test is None else f"{test['p_value']:.3g}",
        )
    console.print(table)
    for stat in stats:
        label = str(stat.get("label") or "")
        console.print(f"{stat['id']}: {label}", markup=False, highlight=False)
    note = "ctrl: the control; lift and z: against it (z > 0: converts better); ★: winner"
    console.print(note, markup=False, highlight=False)
    console.print(str(report.get("message", "")), markup=False, highlight=False)
