"""`imagegate batch FILE --dry-run`: where each line would go and what the batch would cost.

Each line is sent as a dry run (`X-Imagegate-Dry-Run: 1`): the gateway authenticates and
validates it like the real request and answers its route, cache outcome and worst-case quote,
without calling a provider, reserving money or writing a ledger row. Nothing is written to
the output directory. A line whose request repeats an earlier line's is counted once (the
real run would get it from the cache).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from policies.budget import parse_usd
from proxy.workflows.batch_input import BatchLine
from proxy.workflows.gateway import GatewayClient
from proxy.workflows.outcomes import LineFailed
from proxy.workflows.progress import dollars

if TYPE_CHECKING:
    from proxy.workflows.batch import BatchOptions

__all__ = ["LineQuote", "quote_batch"]


@dataclass(frozen=True, slots=True)
class LineQuote:
    line: BatchLine
    key: str = ""
    cache: str = ""
    route: str = ""
    quote_micros: int = 0
    budgets: tuple[tuple[str, int], ...] = ()  # (scope name, micro-USD left) of each budget
    error: str | None = None
    status: int | None = None  # the HTTP status of a line that would fail, if it got one


async def quote_batch(options: BatchOptions, lines: list[BatchLine]) -> int:
    """Print every line's route, cache outcome and quote, and the total. Exit status: 0
    every line quoted, 1 some line would fail (listed)."""
    slots = asyncio.Semaphore(options.concurrency)
    async with GatewayClient(
        options.base_url, api_key=options.api_key, timeout=options.timeout
    ) as gateway:
        quotes = await asyncio.gather(*(_quote(gateway, slots, line) for line in lines))
    console = Console(width=200)
    code = _report(console, quotes, options.budget)
    if options.api_key is None and any(q.status == 401 for q in quotes):
        console.print(
            f"no API key given, and the gateway at {options.base_url} wants one: pass "
            "--api-key KEY or set $OPENAI_API_KEY",
            markup=False,
        )
    return code


async def _quote(gateway: GatewayClient, slots: asyncio.Semaphore, line: BatchLine) -> LineQuote:
    if line.problem is not None:
        return LineQuote(line, error=line.problem)
    async with slots:
        try:
            body = await gateway.quote(line.body)
        except LineFailed as exc:
            status = f"{exc.status}: " if exc.status is not None else ""
            return LineQuote(line, error=f"{status}{exc.message}", status=exc.status)
    if not isinstance(body, dict) or body.get("object") != "imagegate.quote":
        return LineQuote(
            line, error="the gateway answered without a quote (too old for --dry-run?)"
        )
    route = body["route"]
    return LineQuote(
        line,
        key=str(body["request_key"]),
        cache=str(body["cache"]),
        route=f"{route[0]['model']} via {route[0]['provider']}" if route else "(the cache)",
        quote_micros=parse_usd(str(body["quote_usd"])),
        budgets=tuple(
            (f"{b['scope']} {b['name']}", parse_usd(str(b["left_usd"]))) for b in body["budgets"]
        ),
    )


def _report(console: Console, quotes: list[LineQuote], budget: int | None) -> int:
    table = Table("line", "name", "cache", "route", "quote", title="batch --dry-run")
    seen: dict[str, int] = {}
    total = 0
    failed = [q for q in quotes if q.error is not None]
    for q in quotes:
        label = q.line.name or q.line.prompt[:40]
        if q.error is not None:
            table.add_row(str(q.line.line), label, "–", f"fails: {q.error}", "–")
            continue
        first = seen.setdefault(q.key, q.line.line)
        if first != q.line.line:
            table.add_row(str(q.line.line), label, f"HIT (as line {first})", q.route, "$0")
            continue
        total += q.quote_micros
        table.add_row(str(q.line.line), label, q.cache, q.route, dollars(q.quote_micros))
    console.print(table, markup=False)
    console.print(_total_line(quotes, failed, total, budget), markup=False)
    for name, left in _budgets_short(quotes, total):
        console.print(
            f"gateway budget {name}: {dollars(left)} left, less than the total: the run would "
            "stop with insufficient_quota",
            markup=False,
        )
    return 1 if failed else 0


def _total_line(
    quotes: list[LineQuote], failed: list[LineQuote], total: int, budget: int | None
) -> str:
    text = (
        f"total quote: {dollars(total)} (worst case) for {len(quotes) - len(failed)} line(s)"
        f"{f', {len(failed)} would fail' if failed else ''}; nothing was generated or spent"
    )
    if budget is not None:
        verdict = "within" if total <= budget else "over"
        text += f"; {verdict} --budget-usd {dollars(budget)}"
    return text


def _budgets_short(quotes: list[LineQuote], total: int) -> list[tuple[str, int]]:
    left: dict[str, int] = {}
    for q in quotes:
        for name, amount in q.budgets:
            left.setdefault(name, amount)
    return [(name, amount) for name, amount in left.items() if amount < total]
