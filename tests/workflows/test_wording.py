"""What users read never says "seed" (a planning document they never saw): help texts, the
report in the terminal and as HTML, /v1/models descriptions, the README. The `seed` request
parameter (`--seed`, "seed = true" capabilities) is a real thing and stays."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import aiohttp
from rich.console import Console

from policies.scenarios import price_scenarios
from proxy.catalog_loader import load_catalog
from proxy.cli import build_parser
from proxy.workflows.report_output import SpendReport, print_report, write_html

ROOT = Path(__file__).resolve().parents[2]
# The request parameter, as the batch option and its help name it.
PARAMETER = re.compile(r"--seed(\s+SEED)?|the request's seed", re.IGNORECASE)


def helps(parser: argparse.ArgumentParser, path: str = "imagegate") -> dict[str, str]:
    found = {path: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= helps(sub, f"{path} {name}")
    return found


def test_no_help_text_says_seed():
    texts = helps(build_parser())
    assert {"imagegate report", "imagegate keys create", "imagegate batch"} <= set(texts)
    for command, text in texts.items():
        assert "seed" not in PARAMETER.sub("", text).lower(), command


def test_the_report_says_typical_monthly_scenarios(tmp_path):
    day = {"day": "2026-11-02", "spend_micros": 0, "saved_micros": 0}
    spend = {"rows": [], "hit_ratio": None, "budgets": [], "total_spend_usd": "0"}
    scenarios = price_scenarios(load_catalog())
    report = SpendReport("http://gw", None, 0.0, {"model": spend}, [day], 0.0, 0, 0, 0,
                         scenarios)  # fmt: skip
    console = Console(record=True, width=200)
    print_report(console, report)
    shown = console.export_text()
    assert "Typical monthly scenarios on this catalog" in shown and "(typical $0-10)" in shown
    write_html(tmp_path / "r.html", report)
    assert "seed" not in shown.lower()
    assert "seed" not in (tmp_path / "r.html").read_text().lower()


async def test_model_descriptions_do_not_say_seed(gateway):
    async with aiohttp.ClientSession() as http, http.get(gateway.base_url + "/models") as got:
        models = (await got.json())["data"]
    described = [m for m in models if m.get("description")]
    assert any(m["id"] == "text" for m in described)
    assert [m["id"] for m in described if "seed" in m["description"].lower()] == []


def test_the_readme_does_not_say_seed_for_the_plan():
    text = (ROOT / "README.md").read_text()
    assert re.findall(r"(?i)\bthe seed\b|\bseed's|\(seed:", text) == []
