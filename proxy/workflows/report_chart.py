"""A bar chart of spend and savings by day: inline SVG for the HTML report, PNG with Pillow.

Both draw the same geometry (`layout`): one pair of bars per UTC day, spend then savings,
on a shared dollar scale, with the day under each pair (thinned out when there are many).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from policies.axis import nice_ticks
from policies.budget import format_usd

__all__ = ["Bar", "DayTotals", "chart_png", "chart_svg", "layout", "ticks"]

WIDTH: Final = 900
HEIGHT: Final = 420
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 20, 50, 60
SPEND_COLOR: Final = "#3b6fd8"
SAVED_COLOR: Final = "#2e9d5b"
_INK: Final = "#222222"
_GRID: Final = "#dddddd"


@dataclass(frozen=True, slots=True)
class DayTotals:
    day: str  # YYYY-MM-DD
    spend_micros: int
    saved_micros: int


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


def _axis(days: Sequence[DayTotals]) -> tuple[int, ...]:
    """The axis ticks in micro-USD: round amounts from $0 past the tallest bar ($0 to $1
    when nothing was spent or saved)."""
    return nice_ticks(max([0, *(d.spend_micros for d in days), *(d.saved_micros for d in days)]))


def layout(days: Sequence[DayTotals]) -> tuple[list[Bar], int]:
    """The bars and the axis maximum (micro-USD)."""
    top = _axis(days)[-1]
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(1, len(days))
    bar_w = max(1.0, slot * 0.38)
    bars: list[Bar] = []
    for i, day in enumerate(days):
        for j, (micros, color, what) in enumerate(
            ((day.spend_micros, SPEND_COLOR, "spent"), (day.saved_micros, SAVED_COLOR, "saved"))
        ):
            height = plot_h * micros / top
            x = _LEFT + i * slot + slot * 0.12 + j * bar_w
            title = f"{day.day}: ${format_usd(micros)} {what}"
            bars.append(Bar(x, _TOP + plot_h - height, bar_w, height, color, title))
    return bars, top


def _labels(days: Sequence[DayTotals]) -> list[tuple[float, str]]:
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, len(days))
    every = max(1, -(-len(days) // 10))  # at most about 10 labels
    return [
        (_LEFT + i * slot + slot / 2, day.day[5:] if len(days) > 3 else day.day)
        for i, day in enumerate(days)
        if i % every == 0
    ]


def ticks(days: Sequence[DayTotals]) -> list[tuple[float, str]]:
    """Each tick's y and its label ("$0", "$0.25", ...), bottom first."""
    axis = _axis(days)
    plot_h = HEIGHT - _TOP - _BOTTOM
    return [(_TOP + plot_h - plot_h * tick / axis[-1], f"${format_usd(tick)}") for tick in axis]


def chart_svg(days: Sequence[DayTotals], title: str) -> str:
    bars, _ = layout(days)
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{e(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="28" font-size="16" fill="{_INK}">{e(title)}</text>',
    ]
    for y, label in ticks(days):
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" y2="{y:.1f}" '
            f'stroke="{_GRID}"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="{_INK}">{e(label)}</text>'
        )
    for bar in bars:
        parts.append(
            f'<rect x="{bar.x:.1f}" y="{bar.y:.1f}" width="{bar.width:.1f}" '
            f'height="{bar.height:.1f}" fill="{bar.color}"><title>{e(bar.title)}</title></rect>'
        )
    for x, label in _labels(days):
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 18}" font-size="11" '
            f'text-anchor="middle" fill="{_INK}">{e(label)}</text>'
        )
    parts.append(_svg_legend())
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_legend() -> str:
    y = HEIGHT - 18
    return (
        f'<rect x="{_LEFT}" y="{y - 10}" width="12" height="12" fill="{SPEND_COLOR}"/>'
        f'<text x="{_LEFT + 18}" y="{y}" font-size="12" fill="{_INK}">spent</text>'
        f'<rect x="{_LEFT + 80}" y="{y - 10}" width="12" height="12" fill="{SAVED_COLOR}"/>'
        f'<text x="{_LEFT + 98}" y="{y}" font-size="12" fill="{_INK}">saved by the cache</text>'
    )


def chart_png(days: Sequence[DayTotals], title: str, path: Path) -> None:
    bars, _ = layout(days)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    draw.text((_LEFT, 14), title, fill=_INK, font=ImageFont.load_default(size=16))
    for y, label in ticks(days):
        draw.line([(_LEFT, y), (WIDTH - _RIGHT, y)], fill=_GRID)
        draw.text((_LEFT - 6, y), label, fill=_INK, font=font, anchor="rm")
    for bar in bars:
        if bar.height > 0:
            box = [(bar.x, bar.y), (bar.x + bar.width, bar.y + bar.height)]
            draw.rectangle(box, fill=bar.color)
    for x, label in _labels(days):
        draw.text((x, HEIGHT - _BOTTOM + 12), label, fill=_INK, font=font, anchor="mt")
    y = HEIGHT - 24
    draw.rectangle([(_LEFT, y), (_LEFT + 12, y + 12)], fill=SPEND_COLOR)
    draw.text((_LEFT + 18, y), "spent", fill=_INK, font=font)
    draw.rectangle([(_LEFT + 80, y), (_LEFT + 92, y + 12)], fill=SAVED_COLOR)
    draw.text((_LEFT + 98, y), "saved by the cache", fill=_INK, font=font)
    image.save(path, "PNG")
