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
from decimal import Decimal
from typing import TYPE_CHECKING

import openai
from rich.console import Console
from rich.table import Table

from proxy.workflows.batch_input import BatchLine
from proxy.workflows.progress import dollars

if TYPE_CHECKING:
    from proxy.workflows.batch import BatchOptions

__all__ = ["LineQuote", "quote_batch"]

_HEADERS = {"X-Imagegate-Dry-Run": "1"}


@dataclass(frozen=True, slots=True)
class LineQuote:
    line: BatchLine
    key: str = ""
    cache: str = ""
    route: str = ""
    quote: Decimal = Decimal(0)
    budgets: tuple[tuple[str, Decimal], ...] = ()  # (scope name, left) of each gateway budget
    error: str | None = None


async def quote_batch(options: BatchOptions, lines: list[BatchLine]) -> int:
    """Print every line's route, cache outcome and quote, and the total. Exit status: 0
    every line quoted, 1 some line would fail (listed)."""
    client = openai.AsyncOpenAI(
        base_url=options.base_url,
        api_key=options.api_key or "unused-when-open",
        max_retries=0,
        timeout=options.timeout,
    )
    slots = asyncio.Semaphore(options.concurrency)
    try:
        quotes = await asyncio.gather(*(_quote(client, slots, line) for line in lines))
    finally:
        await client.close()
    return _report(Console(width=200), quotes, options.budget)


async def _quote(
    client: openai.AsyncOpenAI, slots: asyncio.Semaphore, line: BatchLine
) -> LineQuote:
    if line.problem is not None:
        return LineQuote(line, error=line.problem)
    extra = {key: value for key, value in line.body.items() if key != "prompt"}
    async with slots:
        try:
            raw = await client.images.with_raw_response.generate(
                prompt=line.prompt, extra_body=extra, extra_headers=_HEADERS
            )
        except openai.APIStatusError as exc:
            return LineQuote(line, error=f"{exc.status_code}: {_message(exc.body)}")
        except openai.APIConnectionError as exc:
            return LineQuote(line, error=f"cannot reach the gateway: {exc}")
    body = raw.http_response.json()
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
        quote=Decimal(str(body["quote_usd"])),
        budgets=tuple(
            (f"{b['scope']} {b['name']}", Decimal(str(b["left_usd"]))) for b in body["budgets"]
        ),
    )


def _message(body: object) -> str:
    """The error's message (the SDK hands over the envelope's inner object)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    return str(body.get("message")) if isinstance(body, dict) else str(body)


def _report(console: Console, quotes: list[LineQuote], budget: Decimal | None) -> int:
    table = Table("line", "name", "cache", "route", "quote", title="batch --dry-run")
    seen: dict[str, int] = {}
    total = Decimal(0)
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
        total += q.quote
        table.add_row(str(q.line.line), label, q.cache, q.route, dollars(q.quote))
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
    quotes: list[LineQuote], failed: list[LineQuote], total: Decimal, budget: Decimal | None
) -> str:
    text = (
        f"total quote: {dollars(total)} (worst case) for {len(quotes) - len(failed)} line(s)"
        f"{f', {len(failed)} would fail' if failed else ''}; nothing was generated or spent"
    )
    if budget is not None:
        verdict = "within" if total <= budget else "over"
        text += f"; {verdict} --budget-usd {dollars(budget)}"
    return text


def _budgets_short(quotes: list[LineQuote], total: Decimal) -> list[tuple[str, Decimal]]:
    left: dict[str, Decimal] = {}
    for q in quotes:
        for name, amount in q.budgets:
            left.setdefault(name, amount)
    return [(name, amount) for name, amount in left.items() if amount < total]
