"""`imagegate ab`: generate prompt variations (optionally on several models) through a gateway
and write a contact sheet to compare them; optionally turn them into an A/B experiment.

    imagegate ab --base "Landing page hero image for AI productivity app" \\
        --variation "minimalist design, blue gradient" --variation "dark theme, neon accents" \\
        --model flux-schnell --model gpt-image-1-mini --out hero-ab

Also runs without the `imagegate` parser: `python -m proxy.workflows.ab ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from policies.budget import format_usd
from proxy.workflows.ab_admin import (
    AdminError,
    create_experiment,
    experiment_body,
    fetch_report,
    print_report,
)
from proxy.workflows.ab_grid import CellResult, Plan, PlanError, load_file, run_grid
from proxy.workflows.ab_sheet import SHEET, render_sheet
from proxy.workflows.arguments import gateway_options, non_negative_int, positive_int
from proxy.workflows.gateway import BadBaseUrl, GatewayClient, root_url
from proxy.workflows.manifest import write_bytes_atomic, write_json_atomic

__all__ = ["AB_JSON", "build_plan", "main", "register", "run"]

AB_JSON: Final = "ab.json"
_EPILOG: Final = """\
experiment file (TOML or JSON): base, variations (list), models (list), size, quality, n;
flags given on the command line win over the file.

--create-experiment NAME makes an A/B experiment of the first model's images (variant A is
the first variation, the control); serve it with GET <gateway>/ab/NAME/<subject>.
--results NAME prints an experiment's report (impressions, conversions, z-tests) and exits.

exit status: 0 every cell made its images, 1 some cell failed (listed) or the experiment
could not be created, 2 usage error
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ab",
        help="generate prompt variations x models and a contact sheet; A/B experiments",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[gateway_options(api_key=True, admin_key=True, timeout=300.0)],
    )
    what = parser.add_argument_group("what to generate")
    what.add_argument("--base", metavar="PROMPT", help="the prompt every variation extends")
    what.add_argument("--variation", action="append", metavar="TEXT", help="repeatable")
    what.add_argument("--experiment", type=Path, metavar="FILE", help="TOML or JSON plan")
    what.add_argument("--model", action="append", metavar="MODEL", help="repeatable: a grid")
    what.add_argument("--size", help="e.g. 1024x1024")
    what.add_argument("--quality", help="e.g. low, medium, high, standard, hd")
    what.add_argument("--n", type=positive_int, help="images per cell (default 1)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--out", type=Path, default=Path("ab-out"), metavar="DIR", help="default ./ab-out"
    )
    run_group.add_argument(
        "--concurrency", type=positive_int, default=4, metavar="N", help="default 4"
    )
    _add_retries(run_group)
    run_group.add_argument(
        "--create-experiment", metavar="NAME", help="an A/B experiment of the first model"
    )
    run_group.add_argument("--results", metavar="NAME", help="print a report and exit")
    parser.set_defaults(func=run)


def _add_retries(parser: argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="retries of a 429, 5xx or connection error (default 2)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`imagegate ab ARGS` without the `imagegate` parser: `python -m proxy.workflows.ab`."""
    parser = argparse.ArgumentParser(prog="imagegate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ab", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.func(args)
    return status


def build_plan(args: argparse.Namespace) -> Plan:
    """The plan from the experiment file, with the command line's flags over it."""
    raw: dict[str, Any] = load_file(args.experiment) if args.experiment else {}
    base = args.base if args.base is not None else raw.get("base", "")
    variations = tuple(args.variation or raw.get("variations", []))
    models = tuple(args.model or raw.get("models", [])) or (None,)
    n = args.n if args.n is not None else raw.get("n", 1)
    if not base.strip() and not any(v.strip() for v in variations):
        raise PlanError("give --base and/or --variation (or an --experiment file)")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10:
        raise PlanError(f"n must be 1-10, got {n!r}")
    if len(set(models)) != len(models) or len(set(variations)) != len(variations):
        raise PlanError("each model and each variation may appear once")
    size = args.size if args.size is not None else raw.get("size")
    quality = args.quality if args.quality is not None else raw.get("quality")
    return Plan(base, variations, models, size, quality, n)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    admin_key = args.admin_key or os.environ.get("IMAGEGATE_ADMIN_KEY") or None
    try:
        root = root_url(args.base_url)
        if args.results:
            report = asyncio.run(_results(root, admin_key, args.results, args.timeout))
            print_report(Console(), report)
            return 0
        plan = build_plan(args)
        args.out.mkdir(parents=True, exist_ok=True)
    except (PlanError, BadBaseUrl, OSError) as exc:
        print(f"imagegate ab: error: {exc}", file=sys.stderr)
        return 2
    except AdminError as exc:
        print(f"imagegate ab: {exc}", file=sys.stderr)
        return 1
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or None
    try:
        results = asyncio.run(_generate(plan, args, root, api_key, console))
    except KeyboardInterrupt:
        print(
            "imagegate ab: interrupted; the gateway cached what was made, so a re-run "
            "finishes without paying for it twice",
            file=sys.stderr,
        )
        return 130
    write_json_atomic(args.out / AB_JSON, _ab_json(plan, results, root))
    write_bytes_atomic(args.out / SHEET, render_sheet(plan, results, root).encode())
    status = _report(console, results, args.out)
    if api_key is None and any(r.status == 401 for r in results):
        print(
            f"imagegate ab: no API key given, and the gateway at {root} wants one: pass "
            "--api-key KEY or set $OPENAI_API_KEY",
            file=sys.stderr,
        )
    if args.create_experiment and status == 0:
        status = _create(console, args, admin_key, results, root)
    elif args.create_experiment:
        print(
            f"imagegate ab: experiment {args.create_experiment!r} not created: cells failed",
            file=sys.stderr,
        )
    return status


async def _generate(
    plan: Plan, args: argparse.Namespace, root: str, api_key: str | None, console: Console
) -> list[CellResult]:
    gateway = GatewayClient(root, api_key=api_key, timeout=args.timeout, retries=args.retries)
    total = len(plan.cells())
    with Progress(
        TextColumn("[bold]ab"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("ab", total=total, last="")

        def done(result: CellResult) -> None:
            line = _cell_line(result)
            progress.update(task, advance=1, last=escape(line))  # the column reads markup
            if not console.is_terminal:
                console.print(f"ab: {line}", markup=False, highlight=False, soft_wrap=True)

        async with gateway:
            return await run_grid(plan, gateway, args.out, concurrency=args.concurrency, done=done)


async def _results(root: str, admin_key: str | None, name: str, wait: float) -> dict[str, Any]:
    async with GatewayClient(root, admin_key=admin_key, timeout=wait) as gateway:
        return await fetch_report(gateway, name)


def _cell_line(result: CellResult) -> str:
    cell = result.cell
    where = f"row {cell.row + 1} x {cell.model or 'default model'}"
    if result.error is not None:
        return f"{where}: failed: {result.error}"
    return f"{where}: {result.cache or '?'} ${format_usd(result.cost_micros)}"


def _ab_json(plan: Plan, results: Sequence[CellResult], root: str) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gateway": root,
        "base": plan.base,
        "variations": list(plan.variations),
        "models": list(plan.models),
        "size": plan.size,
        "quality": plan.quality,
        "n": plan.n,
        "cost_usd": format_usd(sum(r.cost_micros for r in results)),
        "cells": [r.to_json() for r in results],
    }


def _report(console: Console, results: Sequence[CellResult], out: Path) -> int:
    failed = [r for r in results if r.error is not None]
    for result in failed:
        console.print(
            f"failed: {_cell_line(result)}", markup=False, highlight=False, soft_wrap=True
        )
    images = sum(len(r.images) for r in results)
    spent = format_usd(sum(r.cost_micros for r in results))
    print(
        f"ab: {len(results)} cells, {images} images, {len(failed)} failed, ${spent} spent "
        f"-> {out / SHEET}"
    )
    return 1 if failed else 0


def _create(
    console: Console,
    args: argparse.Namespace,
    admin_key: str | None,
    results: Sequence[CellResult],
    root: str,
) -> int:
    name, out = args.create_experiment, args.out
    try:
        body = experiment_body(name, results)
        asyncio.run(_create_experiment(root, admin_key, body, args.timeout))
    except AdminError as exc:
        console.print(
            f"imagegate ab: experiment {name!r} not created: {exc}", markup=False, soft_wrap=True
        )
        return 1
    write_json_atomic(out / "experiment.json", body)
    print(f"experiment {name}: serve it with GET {root}/ab/{name}/<subject>")
    return 0


async def _create_experiment(
    root: str, admin_key: str | None, body: dict[str, Any], wait: float
) -> None:
    async with GatewayClient(root, admin_key=admin_key, timeout=wait) as gateway:
        await create_experiment(gateway, body)


if __name__ == "__main__":
    sys.exit(main())
