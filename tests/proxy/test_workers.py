"""`imagegate serve --workers 2`: coalescing and budgets stay exact across processes, every
scrape of /metrics is the sum of the workers, and the workers die with their supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.replicate_server import FakeReplicate
from tests.proxy.test_crash_recovery import ROOT, start_gateway

SECRET = "sk-workers-0123456789abc"


def write_config(tmp_path: Path, base_url: str, budget: float) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[providers.replicate]\napi_token = "r8_test"\nbase_url = "{base_url}"\n'
        f'[[keys]]\nname = "app"\nkey = "{SECRET}"\nbudget_usd = {budget}\n'
    )
    return config


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
    }
    return {**env, "PYTHONPATH": str(ROOT)}


async def test_two_workers_make_one_upstream_call_and_never_overspend(tmp_path):
    async with FakeReplicate(work_seconds=0.5) as rep:
        config = write_config(tmp_path, rep.base_url, budget=0.03)  # ten flux-schnell images
        proc, base_url = await start_gateway(config, clean_env(), workers=2)
        try:
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key=SECRET, max_retries=0
            ) as client:
                same = await asyncio.gather(
                    *(
                        client.images.with_raw_response.generate(
                            model="flux-schnell", prompt="one kite", size="1024x1024"
                        )
                        for _ in range(40)
                    )
                )
                outcomes = sorted(r.headers["x-cache"] for r in same)
                assert len(rep.requests_to("/predictions", "POST")) == 1
                assert outcomes.count("MISS") == 1
                assert len({r.parse().data[0].b64_json for r in same}) == 1

                many = await asyncio.gather(
                    *(
                        client.images.generate(
                            model="flux-schnell", prompt=f"kite {i}", size="1024x1024"
                        )
                        for i in range(40)
                    ),
                    return_exceptions=True,
                )
                made = [r for r in many if not isinstance(r, BaseException)]
                assert len(made) == 9  # $0.03 budget: one image above, nine here
                assert all(
                    isinstance(r, openai.RateLimitError)
                    for r in many
                    if isinstance(r, BaseException)
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        db = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3")
        assert db.execute("SELECT SUM(cost_micros) FROM ledger").fetchone()[0] == 30_000
        # Every one of the 40 identical requests has its ledger row: the one that paid, and
        # the rest (joined in-process, or found the other worker's images after its lock).
        (kite,) = db.execute(
            "SELECT request_key FROM ledger WHERE cache = 'MISS' ORDER BY ts LIMIT 1"
        ).fetchone()
        rows = dict(
            db.execute(
                "SELECT cache, SUM(requests) FROM ledger WHERE request_key = ? GROUP BY cache",
                (kite,),
            ).fetchall()
        )
        assert rows.pop("MISS") == 1 and sum(rows.values()) == 39, rows


async def test_a_keys_rate_limit_holds_across_workers(tmp_path):
    async with FakeReplicate() as rep:
        config = write_config(tmp_path, rep.base_url, budget=1.0)
        with config.open("a") as extra:
            extra.write("requests_per_minute = 6\n")  # belongs to the [[keys]] table above
        proc, base_url = await start_gateway(config, clean_env(), workers=2)
        try:
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key=SECRET, max_retries=0
            ) as client:
                results = await asyncio.gather(
                    *(
                        client.images.generate(
                            model="flux-schnell", prompt="same", size="1024x1024"
                        )
                        for _ in range(20)
                    ),
                    return_exceptions=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(results) - len(limited) == 6  # one bucket of 6, whichever process answered
    assert all(r.code == "rate_limit_exceeded" for r in limited)


async def test_a_killed_workers_calls_are_settled_by_its_sibling(tmp_path):
    """kill -9 one worker with calls in flight: the supervisor stops its sibling, which
    finishes its own calls and, before it exits, puts the dead worker's calls on the books as
    orphaned rows at their quotes. Nothing stays reserved and no call vanishes."""
    async with FakeReplicate() as rep:
        config = write_config(tmp_path, rep.base_url, budget=1.0)
        proc, base_url = await start_gateway(config, clean_env(), workers=2)
        rep.delay_next(3, times=12, path="/predictions", method="POST")
        async with openai.AsyncOpenAI(base_url=base_url, api_key=SECRET, max_retries=0) as client:
            flying = [
                asyncio.create_task(
                    client.images.generate(
                        model="flux-schnell", prompt=f"kite {i}", size="1024x1024"
                    )
                )
                for i in range(12)
            ]
            while len(rep.requests_to("/predictions", "POST")) < 12:
                await asyncio.sleep(0.02)
            db = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3")
            held = db.execute("SELECT owner, json_extract(draft_json, '$[10]') FROM reservations")
            owners = held.fetchall()
            db.close()
            assert len(owners) == 12
            victim = owners[0][0]
            lost = {request_id for owner, request_id in owners if owner == victim}
            os.kill(int(victim.split(":")[1]), signal.SIGKILL)
            await proc.wait()  # the supervisor stops the sibling, which stops cleanly
            await asyncio.gather(*flying, return_exceptions=True)
    db = sqlite3.connect(tmp_path / "data" / "ledger.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
    rows = db.execute("SELECT cache, cost_micros, request_id FROM ledger").fetchall()
    assert {r for c, _, r in rows if c == "ORPHANED"} == lost  # the dead worker's calls
    assert len(rows) == 12 and all(cost == 3_000 for _, cost, _ in rows)


def placeholder_config(tmp_path: Path, flush_ms: int = 250) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[logging]\nformat = "json"\nflush_ms = {flush_ms}\n'
    )
    return config


def log_records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "gateway.stderr").read_text().splitlines()]


def scraped_total(text: str, status: str = "200") -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "imagegate_http_requests_total"
        and sample.labels["route"] == "/v1/images/generations"
        and sample.labels["status"] == status
    )


async def test_every_scrape_sums_the_workers_and_both_workers_serve(tmp_path):
    proc, base_url = await start_gateway(placeholder_config(tmp_path), clean_env(), workers=2)
    root = base_url[: -len("/v1")]
    scrapes: list[float] = []
    try:
        # a new connection per request: SO_REUSEPORT spreads connections over the workers
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for batch in range(6):
                for i in range(8):
                    body = {"prompt": f"kite {batch} {i}", "model": "flux-schnell"}
                    async with http.post(base_url + "/images/generations", json=body) as got:
                        assert got.status == 200
                for _ in range(3):  # each scrape may land on either worker
                    async with http.get(root + "/metrics") as got:
                        scrapes.append(scraped_total(await got.text()))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    assert scrapes == [8.0 * (1 + i // 3) for i in range(18)]  # the sum, never going back
    records = log_records(tmp_path)  # written out at exit
    workers = {r["pid"] for r in records if r["event"] == "server.started"}
    served = {r["pid"] for r in records if r["event"] == "http.request_completed"}
    assert len(workers) == 2 and proc.pid not in workers
    assert served == workers  # 48 connections: both workers answered
    assert not (tmp_path / "data" / "metrics" / str(proc.pid)).exists()  # cleaned at exit


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; init reaps it


async def test_workers_exit_when_their_supervisor_is_killed(tmp_path):
    config = placeholder_config(tmp_path, flush_ms=0)
    proc, base_url = await start_gateway(config, clean_env(), workers=2)
    workers: set[int] = set()
    try:
        for _ in range(400):  # the start lines are written before the base URL is printed
            workers = {r["pid"] for r in log_records(tmp_path) if r["event"] == "server.started"}
            if len(workers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        for _ in range(600):  # bounded: 30 s (not `wait()`: live workers would hold its stdout)
            if proc.returncode is not None and not any(running(pid) for pid in workers):
                break
            await asyncio.sleep(0.05)
        assert not any(running(pid) for pid in workers)
        host, port = base_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):  # nobody serves the port any more
            await asyncio.open_connection(host, int(port))
    finally:  # nothing is left behind by a failed run
        for pid in [proc.pid, *workers]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(proc.communicate(), 30)  # its stdout closes with the last worker
