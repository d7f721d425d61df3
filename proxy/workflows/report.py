"""`imagegate report`: spend and savings from a gateway's ledger, projected to a month, and the
typical monthly scenarios priced on the current catalog.

    imagegate report --since 30d --by model --by key --html spend.html --png spend.png

Reads `GET /admin/spend?by=...&since=...` (with the admin key) and `GET /v1/models`.
The scenarios are priced on the built-in catalog (the package's `default_catalog.toml`, read
through `policies.catalog_config`), limited to the models the gateway lists: `/v1/models`
carries no prices, so a price the operator overrides in `[models]` is not seen here.
Also runs without the `imagegate` parser: `python -m proxy.workflows.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import tomllib
from collections.abc import Sequence
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final

from rich.console import Console

from policies.catalog import Catalog
from policies.catalog_config import merge_models, parse_catalog
from policies.scenarios import price_scenarios, project_monthly
from proxy.workflows.ab_grid import PlanError
from proxy.workflows.arguments import gateway_options
from proxy.workflows.gateway import BadBaseUrl, GatewayClient, Refused, Unreachable, root_url
from proxy.workflows.report_output import SpendReport, print_report, write_html, write_png

__all__ = ["GROUPS", "main", "parse_since", "register", "run"]

GROUPS: Final = ("key", "team", "model", "day")
_RELATIVE: Final = re.compile(r"(\d+(?:\.\d+)?)([dhw])")
_UNIT_SECONDS: Final = {"h": 3600, "d": 86_400, "w": 7 * 86_400}


class ReportError(Exception):
    """The gateway refused or could not be reached (exit status 1)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report",
        help="spend, savings, projected monthly cost and typical monthly scenarios",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit status: 0 done, 1 the gateway refused or is unreachable, 2 usage error",
        parents=[gateway_options(admin_key=True, timeout=60.0)],
    )
    parser.add_argument(
        "--by", action="append", choices=GROUPS, help="repeatable (default: model and day)"
    )
    parser.add_argument(
        "--since", metavar="WHEN", help="7d, 30d, 12h, 2w, or an ISO date (default: all time)"
    )
    parser.add_argument("--html", type=Path, metavar="FILE", help="an HTML page with a chart")
    parser.add_argument("--png", type=Path, metavar="FILE", help="a bar chart of spend by day")
    parser.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    """`imagegate report ARGS` without the `imagegate` parser."""
    parser = argparse.ArgumentParser(prog="imagegate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


def parse_since(text: str, now: float) -> float:
    """`7d`, `12h`, `2w` (before `now`), an ISO date (UTC midnight) or datetime (UTC when it
    names no zone): unix seconds."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PlanError(f"--since: expected 7d, 12h, 2w or an ISO date, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def run(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        root = root_url(args.base_url)
        since = None if args.since is None else parse_since(args.since, now)
        if since is not None and since >= now:
            raise PlanError("--since must lie in the past")
    except (PlanError, BadBaseUrl) as exc:
        print(f"imagegate report: error: {exc}", file=sys.stderr)
        return 2
    groups = tuple(dict.fromkeys(args.by or ("model", "day")))
    admin_key = args.admin_key or os.environ.get("IMAGEGATE_ADMIN_KEY") or None
    try:
        spend, served = asyncio.run(_fetch(root, admin_key, groups, since, args.timeout))
    except ReportError as exc:
        print(f"imagegate report: {exc}", file=sys.stderr)
        return 1
    report = build_report(root, groups, spend, served, since, now)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    print_report(console, report)
    try:
        if args.html:
            write_html(args.html, report)
        if args.png:
            write_png(args.png, report)
    except OSError as exc:
        print(f"imagegate report: error: cannot write: {exc}", file=sys.stderr)
        return 2
    return 0


def build_report(
    root: str,
    groups: tuple[str, ...],
    spend: dict[str, dict[str, Any]],
    served: frozenset[str],
    since: float | None,
    now: float,
) -> SpendReport:
    days = spend["day"]["rows"]
    start = since
    if start is None and days:
        first = date.fromisoformat(str(days[0]["day"]))
        start = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
    window = 0.0 if start is None else max(0.0, now - start)
    spent = sum(int(row["spend_micros"]) for row in days)
    return SpendReport(
        gateway=root,
        since=since,
        now=now,
        groups={group: spend[group] for group in groups},
        days=days,
        window_seconds=window,
        spend_micros=spent,
        saved_micros=sum(int(row["saved_micros"]) for row in days),
        projected_micros=project_monthly(spent, window),
        scenarios=price_scenarios(builtin_catalog(), served=served or None),
    )


def builtin_catalog() -> Catalog:
    """The catalog a gateway runs with no `[models]` of its own: the packaged defaults."""
    text = resources.files("proxy").joinpath("default_catalog.toml").read_text(encoding="utf-8")
    return parse_catalog(merge_models(tomllib.loads(text)["models"], {}))


async def _fetch(
    root: str, admin_key: str | None, groups: tuple[str, ...], since: float | None, wait: float
) -> tuple[dict[str, dict[str, Any]], frozenset[str]]:
    params = {} if since is None else {"since": repr(since)}
    async with GatewayClient(root, admin_key=admin_key, timeout=wait) as gateway:
        spend = {
            group: await _get(gateway, "/admin/spend", {**params, "by": group})
            for group in dict.fromkeys((*groups, "day"))
        }
        models = await _get(gateway, "/v1/models", {})
    served = frozenset(str(m["id"]) for m in models.get("data", []) if isinstance(m, dict))
    return spend, served


async def _get(gateway: GatewayClient, path: str, params: dict[str, str]) -> dict[str, Any]:
    url = gateway.root + path
    try:
        body = await gateway.call_json("GET", path, params=params)
    except Refused as exc:
        if exc.status == 401:
            raise ReportError(
                "the gateway wants the admin key: --admin-key or $IMAGEGATE_ADMIN_KEY"
            ) from None
        raise ReportError(f"GET {url}: HTTP {exc.status}: {exc.message}") from None
    except Unreachable as exc:
        raise ReportError(f"cannot read {exc.url}: {exc.reason}") from None
    if not isinstance(body, dict):
        raise ReportError(f"cannot read {url}: not a JSON object")
    return body


if __name__ == "__main__":
    sys.exit(main())
