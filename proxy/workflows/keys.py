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
accepted). A created key is printed once and stored only hashed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from proxy.workflows.batch import UsageError, normalize_base_url

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "keys",
        help="issue, list, revoke API keys and set budgets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--admin-key", default=os.environ.get("IMAGEGATE_ADMIN_KEY", ""))
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a key (shown once)")
    create.add_argument("name")
    create.add_argument("--team")
    create.add_argument("--budget-usd", type=float)
    create.add_argument("--window", choices=("day", "month", "total"), default="day")
    create.add_argument("--requests-per-minute", type=int)
    create.add_argument("--images-per-minute", type=int)
    create.add_argument(
        "--model",
        action="append",
        dest="models",
        help="allow this model (repeat); default: every model",
    )
    actions.add_parser("list", help="every key, without secrets")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    budget = actions.add_parser("set-budget", help="set (or clear with 'none') a key's budget")
    budget.add_argument("name")
    budget.add_argument("usd", help="dollars, or 'none'")
    budget.add_argument("--window", choices=("day", "month", "total"), default="day")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: don't cut names to 80 columns
    try:
        status, body = asyncio.run(_call(args))
    except UsageError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    except aiohttp.ClientError as exc:
        console.print(f"[red]cannot reach the gateway at {args.base_url}: {exc}[/red]")
        return 1
    if status >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        console.print(f"[red]{status}: {escape(str(error.get('message', body)))}[/red]")
        return 1
    _show(console, args.action, body)
    return 0


async def _call(args: argparse.Namespace) -> tuple[int, Any]:
    root = normalize_base_url(args.base_url).removesuffix("/v1")
    headers = {"Authorization": f"Bearer {args.admin_key}"} if args.admin_key else {}
    method, path, payload = _request(args)
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, root + path, json=payload) as response,
    ):
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.action == "create":
        return (
            "POST",
            "/admin/keys",
            {
                "name": args.name,
                "team": args.team,
                "budget_usd": args.budget_usd,
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
    usd = None if args.usd.lower() == "none" else float(args.usd)
    return "PUT", f"/admin/keys/{args.name}/budget", {"budget_usd": usd, "window": args.window}


def _show(console: Console, action: str, body: Any) -> None:
    if action == "create":
        console.print(
            f"Key [bold]{body['name']}[/bold] created. Every image route now needs a key "
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
        table.add_row(
            key["name"],
            key["team"] or "–",
            "yes" if key["active"] else "revoked",
            f"${key['budget_usd']}" if key["budget_usd"] is not None else "–",
            key["budget_window"] or "–",
            str(key["requests_per_minute"] or "–"),
            str(key["images_per_minute"] or "–"),
            ", ".join(key["models"] or ["(all)"]),
            key["source"],
        )
    console.print(table)
