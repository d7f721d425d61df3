"""`imagegate report` as a user runs it: a real process reading a real gateway's ledger, with
spend over three days, a cache hit, keys, teams and a budget; the HTML and PNG charts.

Run standalone as `python -m proxy.workflows.report` (the parser `imagegate report` uses)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
from PIL import Image, ImageDraw, ImageFont

from proxy.app_keys import ACCOUNTS
from proxy.config_cost import parse_cost
from proxy.workflows.report import main, parse_since
from proxy.workflows.report_chart import SAVED_COLOR, SPEND_COLOR
from proxy.workflows.report_output import money
from tests.conftest import CountingProvider, ManualClock, PricedProvider, start_gateway

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-secret-0123456789"
SECRET = "sk-web-app-0123456789abcdef"
DAY = 86_400


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


async def report(cwd: Path, *args: str, **env: str) -> Run:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.workflows.report",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in run.stderr, run.stderr
    return run


def rows(text: str, *first: str) -> list[list[str]]:
    """The cells of every table row that starts with the cells `first`."""
    found = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells[: len(first)] == list(first):
            found.append(cells)
    assert found, f"no row {first!r} in:\n{text}"
    return found


def row(text: str, *first: str) -> list[str]:
    return rows(text, *first)[0]


@pytest.fixture
async def ledger(settings):
    """Three days of traffic through a priced gateway, ending a day before the real now."""
    settings = replace(
        settings,
        cost=parse_cost(
            {
                "auth": {"admin_key": ADMIN},
                "keys": [
                    {
                        "name": "web-app",
                        "key": SECRET,
                        "team": "growth",
                        "budget_usd": 25.0,
                        "budget_window": "total",
                    }
                ],
            }
        ),
    )
    clock = ManualClock(time.time() - 3 * DAY)
    gw = await start_gateway(settings, PricedProvider(), clock, serves_as="replicate")
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=SECRET, max_retries=0)
    gw.clients.append(client)

    async def make(model: str, prompt: str) -> None:
        await client.images.generate(model=model, prompt=prompt, size="1024x1024")

    await make("flux-schnell", "a kite")  # day 1: $0.003 + $0.003 + $0.04
    await make("flux-schnell", "a boat")
    await make("flux-1.1-pro", "a lighthouse")
    clock.advance(DAY)
    await make("flux-1.1-pro", "a lighthouse")  # day 2: a hit, $0.04 saved; + $0.003
    await make("flux-schnell", "a train")
    clock.advance(DAY)
    await make("ideogram-v2", "a logo")  # day 3: $0.08
    await gw.app[ACCOUNTS].flush_hits()
    yield gw
    await gw.close()


def check_charts(page_path: Path, png_path: Path) -> None:
    """The page holds an inline SVG chart and nothing external; the PNG has both bar colors."""
    page = page_path.read_text()
    assert "<svg" in page and "$0.046 spent" in page and "$0.04 saved" in page
    assert re.search(r"""(src|href)=["']?(https?:)?//""", page) is None
    chart = Image.open(png_path).convert("RGB")
    assert chart.size == (900, 420)
    colors = {color for _, color in chart.getcolors(maxcolors=1 << 16)}
    assert {_rgb(SPEND_COLOR), _rgb(SAVED_COLOR)} <= colors


async def test_report_reads_the_ledger_and_prices_the_scenarios(ledger, tmp_path):
    run = await report(
        tmp_path,
        "--base-url", ledger.base_url,
        "--since", "7d",
        "--by", "model", "--by", "key", "--by", "team", "--by", "day",
        "--html", "spend.html",
        "--png", "spend.png",
        IMAGEGATE_ADMIN_KEY=ADMIN,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    out = run.stdout
    # by model: spent, saved, images, hits, misses, hit ratio
    assert row(out, "flux-schnell")[1:] == ["$0.009", "$0.00", "3", "0", "3", "0.0%"]
    assert row(out, "flux-1.1-pro")[1:] == ["$0.04", "$0.04", "2", "1", "1", "50.0%"]
    assert row(out, "ideogram-v2")[1:3] == ["$0.08", "$0.00"]
    assert row(out, "web-app")[1:3] == ["$0.129", "$0.04"]
    assert row(out, "growth")[1] == "$0.129"
    days = [datetime.fromtimestamp(time.time() - k * DAY, tz=UTC) for k in (3, 2, 1)]
    assert [row(out, d.strftime("%Y-%m-%d"))[1] for d in days] == ["$0.046", "$0.003", "$0.08"]
    assert row(out, "spent")[1] == "$0.129"
    assert row(out, "saved by the cache")[1] == "$0.04"
    assert row(out, "hit ratio")[1] == "16.7%"  # 1 of 6 requests
    # $0.129 over exactly 7 days, times 30: 3.87 / 7 = 0.552857142... (to the micro-dollar)
    assert row(out, "projected monthly cost")[1].startswith("$0.552857 ")
    assert row(out, "key", "web-app")[2:] == ["total", "$25.00", "$0.129", "$24.871"]
    # typical monthly scenarios on the built-in catalog: 10000 x flux-schnell = $30.00
    by_model, scenario = rows(out, "flux-schnell")
    assert scenario[1:] == ["$0.003", "$0.30", "$1.50", "$6.00", "$30.00"]
    assert row(out, "auto -> flux-schnell")[1:] == scenario[1:]
    assert rows(out, "ideogram-v2")[1][1:] == ["$0.08", "$8.00", "$40.00", "$160.00", "$800.00"]
    assert row(out, "gpt-image-1.5 (medium)")[1] == "$0.034485"
    assert "Enterprise 10,000/mo" in out and "(typical $200-500)" in out
    assert "seed" not in out.lower() and "seed" not in (tmp_path / "spend.html").read_text().lower()

    check_charts(tmp_path / "spend.html", tmp_path / "spend.png")


async def test_the_admin_key_is_needed_and_a_dead_gateway_is_reported(ledger, tmp_path):
    run = await report(tmp_path, "--base-url", ledger.root)
    assert run.code == 1 and "wants the admin key" in run.stderr
    dead = await report(tmp_path, "--base-url", "http://127.0.0.1:9", "--admin-key", ADMIN)
    assert dead.code == 1 and "cannot read http://127.0.0.1:9/admin/spend" in dead.stderr


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_since_accepts_durations_and_iso_dates():
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * DAY
    assert parse_since("12h", now) == now - 12 * 3600
    assert parse_since("2w", now) == now - 14 * DAY
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-11-01T12:00:00+02:00", now) == (
        datetime(2026, 11, 1, 10, tzinfo=UTC).timestamp()
    )


def test_usage_errors_exit_2(capsys):
    assert main(["--since", "last tuesday"]) == 2
    assert "--since: expected 7d" in capsys.readouterr().err
    assert main(["--since", "2999-01-01"]) == 2
    assert main(["--base-url", "gopher://x"]) == 2


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (30_000_000, "$30.00"),
        (3_000, "$0.003"),
        (5_194, "$0.005194"),
        (0, "$0.00"),
        (552_857, "$0.552857"),
        (1_234_500_000, "$1234.50"),
    ],
)
def test_money_shows_cents_and_every_micro_dollar(value, text):
    assert money(value) == text


def test_days_without_traffic_are_charted_as_zero_and_text_is_escaped(tmp_path):
    from proxy.workflows.report_chart import chart_svg, layout
    from proxy.workflows.report_output import SpendReport, write_html

    days = [
        {"day": "2026-10-30", "spend_micros": 40_000, "saved_micros": 0},
        {"day": "2026-11-02", "spend_micros": 3_000, "saved_micros": 80_000},
    ]
    spend = {"rows": [{"model": "<b>x</b>", "spend_micros": 1, "saved_micros": 0, "images": 1,
                      "hits": 0, "misses": 1}], "hit_ratio": None, "budgets": []}  # fmt: skip
    report = SpendReport("http://gw", None, 0.0, {"model": spend}, days, 0.0, 43_000, 80_000, 0, ())
    totals = report.day_totals
    assert [(d.day, d.spend_micros) for d in totals] == [
        ("2026-10-30", 40_000),
        ("2026-10-31", 0),
        ("2026-11-01", 0),
        ("2026-11-02", 3_000),
    ]
    bars, top = layout(totals)
    assert top == 80_000 and len(bars) == 8
    tallest = max(bars, key=lambda b: b.height)
    assert tallest.title == "2026-11-02: $0.08 saved"
    assert "&lt;script&gt;" in chart_svg(totals, "<script>")
    write_html(tmp_path / "r.html", report)
    page = (tmp_path / "r.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def tick_labels(page: str) -> list[str]:
    return re.findall(r'text-anchor="end" fill="#222222">([^<]+)</text>', page)


def margin(image: Image.Image) -> bytes:
    """The strip left of the plot, where the y-axis labels are drawn."""
    return image.convert("RGB").crop((0, 30, 76, 380)).tobytes()


def drawn_labels(labels: list[str]) -> Image.Image:
    """The labels as the chart should draw them: right-aligned, evenly spaced, $0 at the
    bottom of the 310-pixel plot (y 50 to 360)."""
    image = Image.new("RGB", (900, 420), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=12)
    for k, label in enumerate(labels):
        y = 360 - 310 * k / (len(labels) - 1)
        draw.text((74, y), label, fill="#222222", font=font, anchor="rm")
    return image


async def test_a_report_with_nothing_spent_draws_a_zero_axis(settings, clock, tmp_path):
    """An offline gateway (the placeholder provider, $0 a image): the axis reads $0 to $1 in
    round steps, in the HTML and in the PNG, never $0.000001."""
    clock.now = time.time()
    gw = await start_gateway(settings, CountingProvider(), clock)
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    gw.clients.append(client)
    try:
        await client.images.generate(model="dall-e-2", prompt="a kite", size="256x256")
        await gw.app[ACCOUNTS].flush_hits()
        run = await report(
            tmp_path, "--base-url", gw.root, "--html", "zero.html", "--png", "zero.png"
        )
    finally:
        await gw.close()
    assert run.code == 0, run.stderr
    assert row(run.stdout, "spent")[1] == "$0.00"
    expected = ["$0", "$0.25", "$0.5", "$0.75", "$1"]
    page = (tmp_path / "zero.html").read_text()
    assert tick_labels(page) == expected
    assert "0.000001" not in page
    png = Image.open(tmp_path / "zero.png")
    assert margin(png) == margin(drawn_labels(expected))
    assert margin(png) != margin(drawn_labels(["$0", "$0", "$0", "$0", "$0.000001"]))


def test_the_axis_of_the_charts_uses_round_steps():
    from proxy.workflows.report_chart import DayTotals, chart_svg, ticks

    days = [DayTotals("2026-11-01", 129_000, 40_000)]
    assert [label for _, label in ticks(days)] == ["$0", "$0.05", "$0.1", "$0.15"]
    assert tick_labels(chart_svg(days, "t")) == ["$0", "$0.05", "$0.1", "$0.15"]
    assert tick_labels(chart_svg([], "t")) == ["$0", "$0.25", "$0.5", "$0.75", "$1"]


def test_names_from_the_gateway_are_printed_as_text():
    from rich.console import Console

    from proxy.workflows.report_output import SpendReport, print_report

    spend = {"rows": [{"key": "web[bold]app", "spend_micros": 1, "saved_micros": 0, "images": 1,
                       "hits": 0, "misses": 1}], "hit_ratio": None, "budgets": []}  # fmt: skip
    report = SpendReport("http://gw", None, 0.0, {"key": spend}, [], 0.0, 1, 0, 0, ())
    console = Console(record=True, width=200)
    print_report(console, report)
    assert "web[bold]app" in console.export_text()
