"""`imagegate keys create | list | revoke | set-budget`: the admin API from the terminal.

    imagegate keys create web-app --team growth --budget-usd 25 --window day \\
        --requests-per-minute 120 --images-per-minute 60 --model auto --model flux-schnell
    imagegate keys list
    imagegate keys set-budget web-app 50 --window month
    imagegate keys revoke web-app

The admin key comes from `--admin-key` or `$IMAGEGATE_ADMIN_KEY` and must be the one the
gateway was started with (`IMAGEGATE_ADMIN_KEY=... imagegate serve`: the shipped config.toml
reads it as [auth] admin_key); a gateway without an admin key refuses to issue keys, since
the first key would close it. `--base-url` is the gateway's root URL (a trailing /v1 is
accepted). Both go before or after the action. A created key is printed once and stored only
hashed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from policies.budget import MICROS_PER_USD
from proxy.workflows.arguments import (
    DEFAULT_BASE_URL,
    gateway_options,
    positive_int,
    usd_micros,
)
from proxy.workflows.gateway import BadBaseUrl, GatewayClient, Refused, Unreachable

__all__ = ["register", "run"]

_WINDOWS: Final = ("day", "month", "total")
_EPILOG: Final = "exit status: 0 done, 1 the gateway refused or is unreachable, 2 usage error"


class UsageError(Exception):
    """A bad option value (exit status 2)."""


def register(commands: Any) -> None:
    shared = gateway_options(admin_key=True, keep=False)
    parser = commands.add_parser(
        "keys",
        help="issue, list, revoke API keys and set budgets",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[shared],
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key (shown once)", parents=[shared])
    create.add_argument("name", help="the key's name: how it shows in reports and limits")
    create.add_argument("--team", help="a team name; keys of a team share its budgets")
    create.add_argument(
        "--budget-usd",
        type=usd_micros,
        metavar="DOLLARS",
        help="the most this key may spend per --window (default: no limit)",
    )
    create.add_argument(
        "--window", choices=_WINDOWS, default="day", help="the budget's window (default day)"
    )
    create.add_argument(
        "--requests-per-minute",
        type=positive_int,
        metavar="N",
        help="requests this key may make a minute (default: no limit)",
    )
    create.add_argument(
        "--images-per-minute",
        type=positive_int,
        metavar="N",
        help="images this key may ask for a minute (default: no limit)",
    )
    create.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="allow this model (repeat); default: every model",
    )
    actions.add_parser("list", help="every key, without secrets", parents=[shared])
    revoke = actions.add_parser("revoke", help="revoke a key", parents=[shared])
    revoke.add_argument("name", help="the key to revoke")
    budget = actions.add_parser(
        "set-budget", help="set (or clear with 'none') a key's budget", parents=[shared]
    )
    budget.add_argument("name", help="the key whose budget to set")
    budget.add_argument("usd", metavar="DOLLARS", help="dollars per --window, or 'none'")
    budget.add_argument(
        "--window", choices=_WINDOWS, default="day", help="the budget's window (default day)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: don't cut names to 80 columns
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    base_url = getattr(args, "base_url", DEFAULT_BASE_URL)
    try:
        body = asyncio.run(_call(args, base_url))
    except (UsageError, BadBaseUrl) as exc:
        errors.print(f"imagegate keys: error: {exc}", markup=False)
        return 2
    except Unreachable as exc:
        errors.print(
            f"imagegate keys: cannot reach the gateway at {base_url}: {exc.reason}", markup=False
        )
        return 1
    except Refused as exc:
        errors.print(f"[red]imagegate keys: {exc.status}: {escape(exc.message)}[/red]")
        return 1
    _show(console, args.action, body)
    return 0


async def _call(args: argparse.Namespace, base_url: str) -> Any:
    admin_key = getattr(args, "admin_key", None) or os.environ.get("IMAGEGATE_ADMIN_KEY")
    timeout = getattr(args, "timeout", 60.0)
    async with GatewayClient(base_url, admin_key=admin_key, timeout=timeout) as gateway:
        method, path, payload = _request(args)
        return await gateway.call_json(method, path, payload=payload)


def _dollars(micros: int | None) -> float | None:
    """Micro-USD as the JSON number of dollars the admin API reads (exact: a float's
    shortest text holds 6 decimals of any amount the gateway accepts)."""
    return None if micros is None else micros / MICROS_PER_USD


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.action == "create":
        return (
            "POST",
            "/admin/keys",
            {
                "name": args.name,
                "team": args.team,
                "budget_usd": _dollars(args.budget_usd),
                "budget_window": args.window,
                "requests_per_minute": args.requests_per_minute,
                "images_per_minute": args.images_per_minute,
                "models": args.models,
            },
        )
    if args.action == "list":
        return "GET", "/admin/keys", None
    if args.action == "revoke":
        return "DELETE", f"/admin/keys/{args.name}", None
    usd = None if args.usd.lower() == "none" else _dollars(_budget(args.usd))
    return "PUT", f"/admin/keys/{args.name}/budget", {"budget_usd": usd, "window": args.window}


def _budget(text: str) -> int:
    try:
        return usd_micros(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"DOLLARS: {exc} (or 'none')") from None


def _show(console: Console, action: str, body: Any) -> None:
    if action == "create":
        name = escape(str(body["name"]))
        console.print(
            f"Key [bold]{name}[/bold] created. Every image route now needs a key "
            "(clients send it as their OpenAI api_key); this one's secret, shown only now:"
        )
        print(body["key"], file=sys.stdout, flush=True)
        return
    if action != "list":
        console.print_json(data=body)
        return
    table = Table(
        "name",
        "team",
        "active",
        "budget",
        "window",
        "req/min",
        "img/min",
        "models",
        "source",
        title="API keys",
    )
    for key in body["data"]:
        cells = (
            key["name"],
            key["team"] or "–",
            "yes" if key["active"] else "revoked",
            f"${key['budget_usd']}" if key["budget_usd"] is not None else "–",
            key["budget_window"] or "–",
            key["requests_per_minute"] or "–",
            key["images_per_minute"] or "–",
            ", ".join(key["models"] or ["(all)"]),
            key["source"],
        )
        table.add_row(*(escape(str(cell)) for cell in cells))
    console.print(table)
