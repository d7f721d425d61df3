"""`imagegate ab` as a user runs it: a real process against a real gateway (fake upstream),
the contact sheet in headless Chromium, and the grid turned into a served experiment.

Run standalone as `python -m proxy.workflows.ab` (the same parser `imagegate ab` uses)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from policies.errors import ProviderRejected
from proxy.app import create_app
from proxy.config_cost import parse_cost
from proxy.ports import ProviderCall, ProviderResult
from proxy.routes.ab import setup_ab
from proxy.workflows.ab import main
from tests.conftest import PricedProvider

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-secret-0123456789"
HOSTILE = "<script>alert('x')</script> & \"quotes\""


@dataclass
class FailsOn(PricedProvider):
    """Bills by the catalog; refuses any prompt that contains "FAIL" (not retryable)."""

    async def generate(self, call: ProviderCall) -> ProviderResult:
        if "FAIL" in (call.request.prompt or ""):
            self.calls.append(call)
            raise ProviderRejected("the upstream refused this prompt")
        return await super().generate(call)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
async def gateway(settings, clock):
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}}))
    provider = FailsOn()
    app = create_app(settings, providers={"replicate": provider}, clock=clock)
    setup_ab(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.provider = provider
    server.root = str(server.make_url("/")).rstrip("/")
    yield server
    await server.close()


def environment(**extra: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
    }
    return {**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "160", **extra}


async def ab(cwd: Path, *args: str, **env: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.workflows.ab",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(**env),
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in run.stderr, run.stderr
    return run


def cells_of(out: Path) -> list[dict]:
    return json.loads((out / "ab.json").read_text())["cells"]


def check_files(out: Path) -> list[str]:
    """Every image in ab.json is on disk and hashes to its sha256; the sheet links each."""
    sheet = (out / "contact-sheet.html").read_text()
    files = []
    for cell in cells_of(out):
        for image in cell["images"]:
            data = (out / image["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == image["sha256"]
            assert f'src="{image["file"]}"' in sheet
            files.append(image["file"])
    return files


async def check_experiment(gateway, cells: list[dict], tmp_path: Path) -> None:
    """The first model's column became experiment "hero"; A (the first variation) is the
    control; `--results` prints its report."""
    first_column = [c["images"][0]["sha256"] for c in cells if c["column"] == 0]
    async with aiohttp.ClientSession() as http:
        got = await http.get(gateway.root + "/ab/hero/visitor-1", allow_redirects=False)
        assert got.status == 302
        assert got.headers["Location"].split("/")[-1].split(".")[0] in first_column
        got = await http.get(
            gateway.root + "/admin/ab/hero", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        report = await got.json()
    assert [(v["id"], v["control"]) for v in report["variants"]] == [
        ("A", True),
        ("B", False),
        ("C", False),
    ]
    assert report["variants"][2]["label"] == HOSTILE
    results = await ab(
        tmp_path, "--results", "hero", "--base-url", gateway.root, IMAGEGATE_ADMIN_KEY=ADMIN
    )
    assert results.code == 0, results.stderr
    assert "experiment hero" in results.stdout and "No significant winner yet" in results.stdout
    assert "A ctrl" in results.stdout


async def test_grid_sheet_and_experiment_end_to_end(gateway, tmp_path):
    out = tmp_path / "hero"
    run = await ab(
        tmp_path,
        "--base", "Landing page hero image for AI productivity app",
        "--variation", "minimalist design, blue gradient",
        "--variation", "dark theme, neon accents",
        "--variation", HOSTILE,
        "--model", "flux-schnell", "--model", "flux-dev",
        "--size", "256x256",
        "--base-url", gateway.root + "/v1/",
        "--out", str(out),
        "--create-experiment", "hero",
        IMAGEGATE_ADMIN_KEY=ADMIN,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "6 cells, 6 images, 0 failed, $0.084 spent" in run.stdout  # 3 x (0.003 + 0.025)
    cells = cells_of(out)
    assert [(c["row"], c["column"], c["model"]) for c in cells] == [
        (r, c, m) for r in range(3) for c, m in enumerate(("flux-schnell", "flux-dev"))
    ]
    assert {(c["model"], c["cost_usd"], c["cache"]) for c in cells} == {
        ("flux-schnell", "0.003", "MISS"),
        ("flux-dev", "0.025", "MISS"),
    }
    assert cells[2]["prompt"] == (
        "Landing page hero image for AI productivity app, dark theme, neon accents"
    )
    assert len(check_files(out)) == 6
    sheet = (out / "contact-sheet.html").read_text()
    assert "<script>alert" not in sheet and "&lt;script&gt;alert(&#x27;x&#x27;)" in sheet
    assert re.search(r"""(src|href)=["']?(https?:)?//""", sheet) is None  # nothing external
    await check_experiment(gateway, cells, tmp_path)


async def test_failed_cells_are_listed_and_the_exit_status_says_so(gateway, tmp_path):
    out = tmp_path / "out"
    run = await ab(
        tmp_path,
        "--base", "a paper crane",
        "--variation", "origami on a desk",
        "--variation", "FAIL on purpose",
        "--model", "flux-schnell",
        "--size", "256x256",
        "--base-url", gateway.root,
        "--out", str(out),
        "--retries", "0",
        "--create-experiment", "never",
    )  # fmt: skip
    assert run.code == 1
    assert "experiment 'never' not created: cells failed" in run.stderr
    assert "failed: row 2 x flux-schnell: failed: the upstream refused this prompt" in run.stderr
    assert "2 cells, 1 images, 1 failed" in run.stdout
    cells = cells_of(out)
    assert cells[1]["error"] == "the upstream refused this prompt" and cells[1]["status"] == 400
    assert cells[1]["images"] == []
    assert 'class="failed"' in (out / "contact-sheet.html").read_text()
    assert len(check_files(out)) == 1
    async with aiohttp.ClientSession() as http:  # no experiment from a failed grid
        got = await http.get(gateway.root + "/ab/never/x", allow_redirects=False)
        assert got.status == 404


async def test_a_toml_experiment_file_with_flags_over_it(gateway, tmp_path):
    (tmp_path / "plan.toml").write_text(
        'base = "a lighthouse"\nvariations = ["at dawn", "in fog"]\n'
        'models = ["flux-dev"]\nsize = "256x256"\nn = 2\n'
    )
    run = await ab(
        tmp_path, "--experiment", "plan.toml", "--model", "flux-schnell",
        "--base-url", gateway.root, "--out", "toml-out",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    cells = cells_of(tmp_path / "toml-out")
    assert [(c["model"], len(c["images"])) for c in cells] == [("flux-schnell", 2)] * 2
    assert cells[1]["prompt"] == "a lighthouse, in fog"
    assert cells[0]["images"][1]["file"] == "01-at-dawn--flux-schnell-2.png"
    assert len(check_files(tmp_path / "toml-out")) == 4


def test_usage_errors_exit_2(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"base": "x", "variatons": ["typo"]}')
    assert main(["--out", str(tmp_path / "o")]) == 2
    assert "give --base and/or --variation" in capsys.readouterr().err
    assert main(["--experiment", str(tmp_path / "bad.json")]) == 2
    assert "unknown keys variatons" in capsys.readouterr().err
    assert main(["--experiment", str(tmp_path / "missing.toml")]) == 2
    assert main(["--base", "x", "--base-url", "ftp://nope"]) == 2
    assert "--base-url must be an http(s) URL" in capsys.readouterr().err


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
async def test_the_contact_sheet_opens_in_chromium_with_every_image_loaded(gateway, tmp_path):
    out = tmp_path / "sheet"
    run = await ab(
        tmp_path,
        "--base", "a red fox",
        "--variation", "in snow", "--variation", "at night", "--variation", HOSTILE,
        "--model", "flux-schnell", "--model", "ideogram-v2",
        "--size", "1024x1024",
        "--base-url", gateway.root, "--out", str(out),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    files = check_files(out)
    assert len(files) == 6
    browser = await asyncio.create_subprocess_exec(
        str(chromium()),
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000", "--dump-dom",
        (out / "contact-sheet.html").as_uri(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    dom, err = await asyncio.wait_for(browser.communicate(), timeout=90)
    body = re.search(r"<body([^>]*)>", dom.decode())
    assert body is not None, err.decode()[-2000:]
    assert 'data-images="6"' in body.group(1), body.group(1)
    assert 'data-loaded="6"' in body.group(1), body.group(1)


def test_a_json_experiment_file_and_flags_over_it(tmp_path):
    import argparse

    from proxy.workflows.ab import build_plan

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "base": "a hero image",
                "variations": ["blue", "red"],
                "models": ["flux-schnell", "gpt-image-1-mini"],
                "size": "1024x1024",
                "quality": "low",
            }
        )
    )
    flags = {"base": None, "variation": None, "model": None, "size": None, "quality": None}
    plan = build_plan(argparse.Namespace(experiment=plan_file, n=None, **flags))
    assert [(c.row, c.col, c.prompt, c.model) for c in plan.cells()] == [
        (0, 0, "a hero image, blue", "flux-schnell"),
        (0, 1, "a hero image, blue", "gpt-image-1-mini"),
        (1, 0, "a hero image, red", "flux-schnell"),
        (1, 1, "a hero image, red", "gpt-image-1-mini"),
    ]
    assert plan.body(plan.cells()[1]) == {
        "prompt": "a hero image, blue",
        "n": 1,
        "response_format": "b64_json",
        "model": "gpt-image-1-mini",
        "size": "1024x1024",
        "quality": "low",
    }
    flags.update(quality="medium", variation=["green"])
    plan = build_plan(argparse.Namespace(experiment=plan_file, n=3, **flags))
    assert (plan.variations, plan.quality, plan.n) == (("green",), "medium", 3)


async def test_results_fit_80_columns_and_say_which_way_and_how_sure(gateway, settings, tmp_path):
    """The issue's report: B converts about 40 % less than the control, not significant yet.
    At 80 columns no header wraps, z has the lift's sign, and the verdict says B looks worse,
    how sure that is, and how many more impressions would settle it."""
    run = await ab(
        tmp_path,
        "--base", "a kite",
        "--variation", "over a calm lake",
        "--variation", "in a storm [bold] at dusk",
        "--model", "flux-schnell",
        "--size", "256x256",
        "--base-url", gateway.root,
        "--out", str(tmp_path / "out"),
        "--create-experiment", "kites",
        IMAGEGATE_ADMIN_KEY=ADMIN,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    db = sqlite3.connect(settings.data_dir / "experiments.sqlite3")
    with db:  # 96 saw A (24 converted), 101 saw B (15 converted)
        for variant, shown, converted in (("A", 96, 24), ("B", 101, 15)):
            rows = [("kites", f"{variant}{i}", variant, 1.0) for i in range(shown)]
            db.executemany("INSERT INTO impressions VALUES (?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO conversions VALUES (?, ?, ?, ?)", rows[:converted])
    db.close()
    results = await ab(
        tmp_path, "--results", "kites", "--base-url", gateway.root,
        IMAGEGATE_ADMIN_KEY=ADMIN, COLUMNS="80",
    )  # fmt: skip
    assert results.code == 0, results.stderr
    lines = results.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    headers = ("variant", "impressions", "conversions", "rate", "lift", "z", "p")
    header = next(line for line in lines if "variant" in line)
    assert [cell.strip() for cell in header.strip("┃│ ").split("┃")] == list(headers)
    row_b = next(line for line in lines if line.startswith("│ B"))
    assert "-40.6%" in row_b and "-1.79" in row_b  # worse: negative lift, negative z
    assert "B: in a storm [bold] at dusk" in lines  # a label is text, not markup
    verdict = " ".join(results.stdout.split())
    assert "No significant winner yet at alpha 0.05." in verdict
    assert "B looks worse than the control A (14.9% vs 25.0%, -40.6%)" in verdict
    assert "not significant yet: p = 0.074, needs < 0.05" in verdict
    assert re.search(r"about [\d,]+ more impressions per variant would settle it", verdict)


async def test_results_without_the_admin_key_say_how_to_give_it(gateway, tmp_path):
    """`imagegate ab --results` as a newcomer runs it in a fresh terminal: no admin key. The
    message names ab's own option and variable, not another command's."""
    run = await ab(tmp_path, "--results", "hero", "--base-url", gateway.root)
    assert run.code == 1
    assert "--admin-key or $IMAGEGATE_ADMIN_KEY" in run.stderr, run.stderr
    assert "imagegate keys" not in run.stderr


async def test_a_grid_without_an_api_key_says_how_to_give_one(gateway, tmp_path):
    """Once the gateway has keys, `imagegate ab` run without one fails every cell with 401;
    the run then says which option or variable carries the key."""
    async with aiohttp.ClientSession() as http:
        issued = await http.post(
            f"{gateway.root}/admin/keys",
            json={"name": "web-app"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert issued.status in (200, 201), await issued.text()
    run = await ab(
        tmp_path, "--base", "a kite", "--variation", "red", "--variation", "blue",
        "--model", "flux-schnell", "--base-url", gateway.root, "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert run.code == 1
    assert "2 failed" in run.stdout
    assert (
        f"no API key given, and the gateway at {gateway.root} wants one: pass --api-key KEY "
        "or set $OPENAI_API_KEY"
    ) in run.stderr, run.stderr
