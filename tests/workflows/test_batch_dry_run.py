"""`imagegate batch FILE --dry-run` as a user runs it: a real process in front of a real
gateway whose Replicate adapter talks to the loopback fake. Nothing may reach the upstream,
the ledger or the output directory."""

from __future__ import annotations

import json
from dataclasses import replace

from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.config import ProviderSettings, Secret
from proxy.config_cost import parse_cost
from tests.conftest import CountingProvider, Gateway, ledger_of
from tests.fakes.replicate_server import FakeReplicate
from tests.workflows.test_batch import batch

SECRET = "sk-batch-0123456789abcdef"


async def start(settings, clock, rep: FakeReplicate, budget_usd: float) -> Gateway:
    providers = {
        "replicate": ProviderSettings(
            name="replicate", kind="replicate", api_key=Secret("r8_test"),
            base_url=rep.base_url, timeout_seconds=5,
        )
    }  # fmt: skip
    cost = parse_cost({"keys": [{"name": "batch", "key": SECRET, "budget_usd": budget_usd}]})
    app = create_app(replace(settings, providers=providers, cost=cost), clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Gateway(server, CountingProvider(), clock)


async def test_dry_run_prints_each_line_and_the_total_and_spends_nothing(settings, clock, tmp_path):
    source = tmp_path / "lines.jsonl"
    rows = [
        {"prompt": "a red kite", "model": "flux-schnell", "n": 2},
        {"prompt": "a blue kite", "model": "flux-1.1-pro"},
        {"prompt": "a red kite", "model": "flux-schnell", "n": 2},  # the first line's request
        {"prompt": "a kite", "model": "flux-schnell", "size": "999x999"},  # would fail
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    async with FakeReplicate() as rep:
        gw = await start(settings, clock, rep, budget_usd=0.04)
        try:
            run = await batch(
                tmp_path, str(source), "--base-url", gw.root, "--api-key", SECRET,
                "--dry-run", "--budget-usd", "1",
            )  # fmt: skip
            ledger = ledger_of(gw.app)
            rows_after = ledger.rows()
        finally:
            await gw.close()
        assert rep.requests == []  # the upstream never heard of it
    assert rows_after == []
    assert not (tmp_path / "batch-out").exists()
    assert run.code == 1, run.stdout + run.stderr  # line 4 would fail
    out = run.stdout
    cells = [r.split("│") for r in out.splitlines() if r.startswith("│ ")]
    line_of = {int(c[1]): "│".join(c) for c in cells if c[1].strip()}
    assert "flux-schnell via replicate" in line_of[1] and "MISS" in line_of[1]
    assert "$0.006" in line_of[1]
    assert "flux-1.1-pro via replicate" in line_of[2] and "$0.04" in line_of[2]
    assert "HIT (as line 1)" in line_of[3]
    assert "fails: 400: Invalid value for 'size'" in line_of[4]
    assert "total quote: $0.046 (worst case) for 3 line(s), 1 would fail" in out
    assert "nothing was generated or spent" in out and "within --budget-usd $1" in out
    assert "gateway budget key batch: $0.04 left" in out  # the key's own budget is smaller


async def test_dry_run_without_a_key_says_how_to_give_one(settings, clock, tmp_path):
    """A newcomer whose gateway has keys runs `batch --dry-run` without one: the lines fail
    with 401, and the run says which option or variable carries the key (a command-line user
    cannot send an Authorization header)."""
    source = tmp_path / "prompts.txt"
    source.write_text("a red kite\na blue kite\n")
    async with FakeReplicate() as rep:
        gw = await start(settings, clock, rep, budget_usd=1)
        root = gw.root
        try:
            run = await batch(tmp_path, str(source), "--base-url", root, "--dry-run")
        finally:
            await gw.close()
    assert run.code == 1, run.stdout + run.stderr
    assert "2 would fail" in run.stdout
    assert (
        f"no API key given, and the gateway at {root} wants one: pass --api-key KEY or set "
        "$OPENAI_API_KEY"
    ) in run.stdout
