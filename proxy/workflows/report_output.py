"""What `imagegate report` shows: rich tables in the terminal, an HTML page, a PNG chart."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from policies.budget import format_usd, parse_usd
from policies.scenarios import SCENARIOS, PricedPick
from proxy.workflows.manifest import write_bytes_atomic
from proxy.workflows.report_chart import DayTotals, chart_png, chart_svg

__all__ = ["SpendReport", "money", "print_report", "report_tables", "write_html", "write_png"]

Rows = list[list[str]]


@dataclass(frozen=True, slots=True)
class SpendReport:
    gateway: str
    since: float | None
    now: float
    groups: dict[str, dict[str, Any]]  # by -> the /admin/spend answer
    days: list[dict[str, Any]]  # the by=day rows of the window
    window_seconds: float
    spend_micros: int
    saved_micros: int
    projected_micros: int  # a month at the window's rate
    scenarios: tuple[PricedPick, ...]

    @property
    def day_totals(self) -> list[DayTotals]:
        """Every day from the first to the last with traffic; days without any are 0."""
        known = {str(r["day"]): (int(r["spend_micros"]), int(r["saved_micros"])) for r in self.days}
        if not known:
            return []
        day, last = date.fromisoformat(min(known)), date.fromisoformat(max(known))
        totals = []
        while day <= last:
            spend, saved = known.get(day.isoformat(), (0, 0))
            totals.append(DayTotals(day.isoformat(), spend, saved))
            day += timedelta(days=1)
        return totals

    @property
    def window_text(self) -> str:
        start = "the first spend" if self.since is None else _when(self.since)
        return f"{start} to {_when(self.now)} ({self.window_seconds / 86_400:.1f} days)"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(micros: int) -> str:
    """`$30.00`, `$0.003`, `$5.194`: at least cents, every significant micro-dollar."""
    text = format_usd(micros)
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _dollars(text: object) -> str:
    """A gateway amount ("0.04", "25") shown as `money` shows it; "-" when unreadable."""
    try:
        return money(parse_usd(str(text)))
    except ValueError:
        return "-"


def _ratio(value: object) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _group_rows(by: str, answer: dict[str, Any]) -> Rows:
    rows = []
    for r in answer.get("rows", []):
        asked = int(r["hits"]) + int(r["misses"])
        rows.append(
            [
                str(r.get(by) if r.get(by) is not None else "(none)"),
                money(int(r["spend_micros"])),
                money(int(r["saved_micros"])),
                str(r["images"]),
                str(r["hits"]),
                str(r["misses"]),
                _ratio(int(r["hits"]) / asked if asked else None),
            ]
        )
    return rows


def report_tables(report: SpendReport) -> list[tuple[str, list[str], Rows]]:
    """(title, header, rows) of every table, for the terminal and the HTML page alike."""
    tables = [
        (
            f"Spend and savings by {by}",
            [by, "spent", "saved", "images", "hits", "misses", "hit ratio"],
            _group_rows(by, answer),
        )
        for by, answer in report.groups.items()
    ]
    first = next(iter(report.groups.values()))
    summary = [
        ["window", report.window_text],
        ["spent", money(report.spend_micros)],
        ["saved by the cache", money(report.saved_micros)],
        ["hit ratio", _ratio(first.get("hit_ratio"))],
        ["projected monthly cost", f"{money(report.projected_micros)} (spend per day x 30)"],
        ["spent all time", _dollars(first.get("total_spend_usd"))],
    ]
    tables.append(("Summary", ["", ""], summary))
    budgets = [
        [b["scope"], b["name"], b["window"], _dollars(b["limit_usd"]),
         _dollars(b["spent_usd"]), _dollars(b["left_usd"])]
        for b in first.get("budgets", [])
    ]  # fmt: skip
    if budgets:
        tables.append(("Budgets", ["scope", "name", "window", "limit", "spent", "left"], budgets))
    tables.append(_scenario_table(report.scenarios))
    return tables


def _scenario_table(priced: Sequence[PricedPick]) -> tuple[str, list[str], Rows]:
    header = ["model", "per image"] + [
        f"{s.name} {s.images_per_month:,}/mo (typical {s.typical_cost})" for s in SCENARIOS
    ]
    rows = []
    for p in priced:
        label = p.pick.label
        if p.served_by is not None and p.served_by != p.pick.model:
            label += f" -> {p.served_by}"
        if p.per_image_micros is None:
            rows.append([label, f"n/a: {p.note}"] + [""] * len(SCENARIOS))
            continue
        rows.append(
            [label, money(p.per_image_micros)]
            + [money(m) if m is not None else "" for m in p.monthly_micros]
        )
    title = "Typical monthly scenarios on this catalog (1024x1024, the gateway's quote)"
    return title, header, rows


def print_report(console: Console, report: SpendReport) -> None:
    console.print(f"imagegate report for {report.gateway}", markup=False, highlight=False)
    for title, header, rows in report_tables(report):
        # Key, team and model names are the gateway's text, not rich markup.
        table = Table(title=escape(title), title_justify="left", show_header=any(header))
        for i, name in enumerate(header):
            table.add_column(escape(name), justify="left" if i == 0 else "right", overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)


def write_html(path: Path, report: SpendReport) -> None:
    """A self-contained page: the tables and an inline SVG chart (no external resource)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        f"<title>imagegate spend: {e(report.gateway)}</title>",
        "<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 24px}"
        "th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
        "caption{text-align:left;font-weight:600;padding:4px 0}</style>",
        "</head><body>",
        f"<h1>Spend report for {e(report.gateway)}</h1>",
        f"<p>{e(report.window_text)}</p>",
        chart_svg(report.day_totals, "Spend and savings by day (UTC)"),
    ]
    for title, header, rows in report_tables(report):
        parts.append(f"<table><caption>{e(title)}</caption>")
        if any(header):
            parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts.extend("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append("</table>")
    parts.append("</body></html>\n")
    write_bytes_atomic(path, "\n".join(parts).encode())


def write_png(path: Path, report: SpendReport) -> None:
    chart_png(report.day_totals, f"imagegate: spend and savings by day, {report.gateway}", path)
