"""The dashboard page: plain HTML, inline CSS and SVG, a few lines of script. Every value from
the ledger or a client (prompts, key names) is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from typing import Any

from policies.axis import nice_ticks
from policies.budget import format_usd

__all__ = ["render_dashboard"]

_WINDOW_DAYS = 30

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}h1{margin:0;font-size:20px}
main{padding:16px 24px;display:grid;gap:16px}section{background:#fff;border-radius:8px;
padding:14px 16px;box-shadow:0 1px 2px #0001}h2{font-size:15px;margin:0 0 10px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}.card b{display:block;
font-size:24px}.grid3{display:grid;grid-template-columns:repeat(3,1fr);gap:16px}
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;border-bottom:1px solid #eee;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meter{height:8px;background:#e3e6ea;border-radius:4px}.meter i{display:block;height:8px;
border-radius:4px;background:#2f9e44}.low i{background:#e8590c}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px}
figure{margin:0}figure img{width:100%;aspect-ratio:1;object-fit:cover;border-radius:6px;
background:#eee}figcaption{font-size:12px;color:#555}.state-open{color:#c92a2a}
.state-closed{color:#2f9e44}.muted{color:#777}
"""

_SCRIPT = """
(function(){var imgs=[].slice.call(document.images),left=imgs.length;
function done(){document.body.dataset.imagesLoaded=String(imgs.filter(function(i){
return i.complete&&i.naturalWidth>0}).length);}
if(!left){done();}imgs.forEach(function(i){if(i.complete){if(--left===0)done();}
else{i.addEventListener('load',function(){if(--left===0)done();});
i.addEventListener('error',function(){if(--left===0)done();});}});
setTimeout(function(){location.reload();},60000);})();
"""


def render_dashboard(
    *,
    now: float,
    reports: Mapping[str, Mapping[str, Any]],
    days: Sequence[Mapping[str, Any]],
    health: Sequence[tuple[str, str, str]],
    gallery: Sequence[Mapping[str, Any]],
    totals: Mapping[str, Any],
    generated_at: str,
    reservations: int,
) -> str:
    saved = sum(int(d["saved_micros"]) for d in days)
    spent = sum(int(d["spend_micros"]) for d in days)
    ratio = totals.get("hit_ratio")
    cards = [
        ("Spent, 30 days", f"${format_usd(spent)}"),
        ("Saved by the cache, 30 days", f"${format_usd(saved)}"),
        ("Hit ratio", "–" if ratio is None else f"{ratio:.1%}"),
        ("Reservations open", str(reservations)),
    ]
    body = [
        "<section class='cards'>",
        *(f"<div class='card'>{escape(t)}<b>{escape(v)}</b></div>" for t, v in cards),
        "</section>",
        "<section><h2>Spend and savings per day (UTC)</h2>",
        _chart(days, now),
        "</section><section class='grid3'>",
        *(_table(f"Spend by {by}", by, reports[by]["rows"]) for by in ("key", "team", "model")),
        "</section><section class='grid3'><div>",
        _budgets(totals.get("budgets", [])),
        "</div><div>",
        _health(health),
        "</div></section>",
        _gallery(gallery),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>imagegate dashboard</title><meta name='viewport' "
        f"content='width=device-width'><style>{_CSS}</style></head><body>"
        f"<header><h1>imagegate</h1><span class='muted'>{escape(generated_at)}</span></header>"
        f"<main>{''.join(body)}</main><script>{_SCRIPT}</script></body></html>"
    )


def _last_days(days: Sequence[Mapping[str, Any]], now: float) -> list[Mapping[str, Any]]:
    """Every UTC day of the window, days without traffic as zeros, oldest first."""
    by_day = {str(d["day"]): d for d in days}
    out: list[Mapping[str, Any]] = []
    for back in range(_WINDOW_DAYS - 1, -1, -1):
        day = datetime.fromtimestamp(now - back * 86400, UTC).strftime("%Y-%m-%d")
        out.append(by_day.get(day, {"day": day, "spend_micros": 0, "saved_micros": 0}))
    return out


def _axis(ticks: Sequence[int], width: int, height: int, pad: int, left: int) -> list[str]:
    """A gridline and a dollar label per tick ($0 at the baseline, drawn darker)."""
    parts = []
    for tick in ticks:
        y = height - pad - (height - 2 * pad) * tick / ticks[-1]
        colour = "#999" if tick == 0 else "#e3e6ea"
        parts.append(
            f"<line x1='{left}' y1='{y:.1f}' x2='{width - pad}' y2='{y:.1f}' stroke='{colour}'/>"
            f"<text class='tick' x='{left - 4}' y='{y + 3:.1f}' font-size='10' "
            f"text-anchor='end'>${format_usd(tick)}</text>"
        )
    return parts


def _chart(days: Sequence[Mapping[str, Any]], now: float) -> str:
    width, height, pad, left = 900, 220, 30, 56
    if not days:
        return "<p class='muted' id='spend-chart-empty'>No traffic in the last 30 days.</p>"
    days = _last_days(days, now)
    peak = max(max(int(d["spend_micros"]), int(d["saved_micros"])) for d in days)
    ticks = nice_ticks(peak)  # $0 to $1 when nothing was spent: zero is a normal state
    top = ticks[-1]
    slot = (width - left - pad) / len(days)
    bar = max(2.0, slot / 2 - 2)
    parts = [
        f"<svg id='spend-chart' data-days='{len(days)}' viewBox='0 0 {width} {height}' "
        f"width='100%' role='img' aria-label='Spend and savings per day'>",
        *_axis(ticks, width, height, pad, left),
    ]
    for i, day in enumerate(days):
        x = left + i * slot
        for offset, field, colour in (
            (0, "spend_micros", "#1c7ed6"),
            (bar + 1, "saved_micros", "#2f9e44"),
        ):
            value = int(day[field])
            h = (height - 2 * pad) * value / top
            kind = field.split("_")[0]
            parts.append(
                f"<rect class='bar {kind}' data-day='{escape(str(day['day']))}' "
                f"data-usd='{format_usd(value)}' x='{x + offset:.1f}' y='{height - pad - h:.1f}' "
                f"width='{bar:.1f}' height='{h:.1f}' fill='{colour}'><title>"
                f"{escape(str(day['day']))}: {kind} ${format_usd(value)}</title></rect>"
            )
        if i % 5 == (len(days) - 1) % 5:  # a date under every fifth day, today included
            parts.append(
                f"<text x='{x:.1f}' y='{height - 10}' font-size='10'>"
                f"{escape(str(day['day'])[5:])}</text>"
            )
    parts.append(
        f"<text x='{left}' y='14' font-size='11'>highest day ${format_usd(peak)} "
        "· blue: spent · green: saved</text></svg>"
    )
    return "".join(parts)


def _table(title: str, by: str, rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"<div><h2>{escape(title)}</h2><table class='spend-{by}'><tr><th>{by}</th>"
        "<th>spent</th><th>saved</th><th>images</th></tr>"
    ]
    for row in rows[:12]:
        name = row.get(by) or "(open gateway)" if by == "key" else row.get(by) or "–"
        lines.append(
            f"<tr><td>{escape(str(name))}</td><td class='n'>${escape(row['spend_usd'])}"
            f"</td><td class='n'>${escape(row['saved_usd'])}</td>"
            f"<td class='n'>{int(row['images'])}</td></tr>"
        )
    if not rows:
        lines.append("<tr><td colspan='4' class='muted'>nothing yet</td></tr>")
    return "".join(lines) + "</table></div>"


def _budgets(budgets: Sequence[Mapping[str, Any]]) -> str:
    lines = ["<h2>Budgets</h2><table id='budgets'>"]
    for b in budgets:
        limit, left = Decimal(b["limit_usd"]), Decimal(b["left_usd"])
        share = float(left / limit) if limit else 0.0
        low = " low" if share < 0.2 else ""
        lines.append(
            f"<tr><td>{escape(b['scope'])} {escape(b['name'])} <span class='muted'>"
            f"({escape(b['window'])})</span></td><td class='n'>${escape(b['left_usd'])} of "
            f"${escape(b['limit_usd'])}</td><td style='width:35%'><div class='meter{low}'>"
            f"<i style='width:{share:.0%}'></i></div></td></tr>"
        )
    if not budgets:
        lines.append("<tr><td class='muted'>No budgets configured.</td></tr>")
    return "".join(lines) + "</table>"


def _health(health: Sequence[tuple[str, str, str]]) -> str:
    lines = [
        "<h2>Provider health</h2><table id='health'><tr><th>model</th><th>provider</th>"
        "<th>circuit</th></tr>"
    ]
    for model, provider, state in health:
        lines.append(
            f"<tr><td>{escape(model)}</td><td>{escape(provider)}</td>"
            f"<td class='{_state_class(state)}'>{escape(state)}</td></tr>"
        )
    return "".join(lines) + "</table>"


def _state_class(state: str) -> str:
    """closed green, open red; 'not configured' (no credentials) grey."""
    return "muted" if state.startswith("not configured") else f"state-{escape(state.split()[0])}"


def _gallery(items: Sequence[Mapping[str, Any]]) -> str:
    figures = []
    for item in items:
        when = datetime.fromtimestamp(float(item["ts"]), UTC).strftime("%m-%d %H:%M")
        prompt = str(item["prompt"])
        short = prompt if len(prompt) <= 90 else prompt[:89] + "…"
        figures.append(
            f"<figure><img src='{escape(item['url'])}' alt='{escape(short)}' loading='eager'>"
            f"<figcaption>{escape(short)}<br>{escape(item['model'])} · "
            f"${format_usd(int(item['cost_micros']))} · {escape(item['cache'])} · {when}"
            "</figcaption></figure>"
        )
    inner = "".join(figures) or "<p class='muted'>No images yet.</p>"
    return (
        f"<section><h2>Recent images</h2><div class='gallery' id='gallery'>{inner}</div></section>"
    )
