"""The bench harness does not rot: its pieces run in-process at tiny sizes.

No wrk, no LiteLLM, no timing assertions (benchmarks measure; tests check behaviour):
the fake upstream answers and counts, the limit returns exactly the bytes it was given,
the wrk script and summary parser agree, `populate` writes entries the gateway serves as
hits, and a results document built by `bench.run.analyse` has the documented shape.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.assets import make_png
from bench.gateway import populate, request_body, write_config
from bench.limit import build_limit_app, load_bodies
from bench.load import burst, lua_script, parse_wrk, percentile
from bench.procs import RssSampler, tree_pids
from bench.report import SCHEMA, Run, check_results, render_table
from bench.run import analyse
from bench.upstream import LARGE_MARK, build_upstream_app
from proxy.app import create_app
from proxy.config import load_settings

pytestmark = pytest.mark.timeout(60)

TINY = {"small": make_png(300, side=64), "large": make_png(3000, side=64)}


async def test_assets_are_real_deterministic_pngs_near_their_size() -> None:
    data = make_png(2000, side=128)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert 1000 < len(data) <= 2000
    assert make_png.__wrapped__(2000, side=128) == data  # same bytes when made again


async def test_fake_upstream_answers_like_openai_and_counts_calls() -> None:
    app = build_upstream_app(latency_s=0.0, images=TINY)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/v1/images/generations"))
        for prompt, expected in (("a", "small"), (f"b {LARGE_MARK}", "large"), ("a", "small")):
            async with session.post(url, data=request_body(prompt)) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert base64.b64decode(body["data"][0]["b64_json"]) == TINY[expected]
            assert body["output_format"] == "png" and body["usage"]["output_tokens"] > 0
        async with session.get(server.make_url("/_bench/stats")) as resp:
            assert await resp.json() == {"calls": 3, "prompts": 2}
        # Identical concurrent requests: the burst client sends them all and counts them.
        result = await burst(url, request_body("c").encode(), 20)
        assert result.ok == 20 and len(result.latencies_ms) == 20
        async with session.post(server.make_url("/_bench/reset")) as resp:
            assert resp.status == 200
        async with session.get(server.make_url("/_bench/stats")) as resp:
            assert (await resp.json())["calls"] == 0


async def test_limit_returns_exactly_the_stored_bytes(tmp_path: Path) -> None:
    (tmp_path / "post-b64-small.json").write_bytes(b'{"data": [{"b64_json": "AAAA"}]}')
    (tmp_path / "blob-abc.png").write_bytes(TINY["small"])
    posts, blobs = load_bodies(tmp_path)
    async with TestServer(build_limit_app(posts, blobs)) as server:
        async with aiohttp.ClientSession() as session:
            async with session.post(server.make_url("/b64-small"), data=b"{}") as resp:
                assert resp.status == 200
                assert await resp.read() == b'{"data": [{"b64_json": "AAAA"}]}'
                assert resp.content_type == "application/json"
            async with session.get(server.make_url("/images/abc.png")) as resp:
                assert await resp.read() == TINY["small"]
            async with session.get(server.make_url("/images/nope.png")) as resp:
                assert resp.status == 404


def test_wrk_script_and_summary_parser() -> None:
    fixed = lua_script(method="POST", bodies=['{"prompt": "a \\"quoted\\" ]] fox"}'])
    assert 'wrk.method = "POST"' in fixed and "wrk.body =" in fixed and "BENCH_JSON" in fixed
    rotating = lua_script(method="POST", bodies=["a", "b"], headers={"X": "1"})
    assert "request = function()" in rotating and 'wrk.headers["X"] = "1"' in rotating
    unique = lua_script(method="POST", unique_body=('{"prompt": "p ', '"}'))
    assert "counter = counter + 1" in unique
    summary = {
        "requests": 1000,
        "duration_us": 2_000_000,
        "bytes": 4_000_000,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 1, "timeout": 0},
        "latency_us": {"p50": 1500, "p90": 2500, "p99": 9000, "max": 12000, "mean": 1700.5},
    }
    output = f"Running 2s test @ http://x\nBENCH_JSON {json.dumps(summary)}\n"
    result = parse_wrk(output, connections=8)
    assert result.rps == 500.0 and result.p50_ms == 1.5 and result.p99_ms == 9.0
    assert result.errors == 1 and result.connections == 8 and result.mb_per_s == 2.0
    with pytest.raises(ValueError, match="no summary"):
        parse_wrk("wrk: connection refused", connections=1)
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([], 99) == 0.0


def test_rss_sampler_sees_this_process() -> None:
    import os
    import time

    assert os.getpid() in tree_pids(os.getpid())
    with RssSampler([os.getpid()], interval=0.01) as rss:
        time.sleep(0.05)
    assert rss.peak_per_process > 1_000_000


async def test_populated_entries_are_hits(tmp_path: Path) -> None:
    """`populate` writes rows under the gateway's own keys: the gateway serves them as hits
    (the placeholder is the provider here, so a miss could not reach anything)."""
    config = write_config(
        tmp_path / "config.toml",
        port=0,
        data_dir=tmp_path / "data",
        upstream_base_url=None,
        placeholder=True,
    )
    prompts = [f"bench many {i}" for i in range(50)]
    assert populate(config, prompts, TINY["small"], batch=16) == 50
    settings = load_settings(config, environ={})
    async with TestServer(create_app(settings)) as server, aiohttp.ClientSession() as session:
        for prompt in (prompts[0], prompts[-1]):
            async with session.post(
                server.make_url("/v1/images/generations"),
                data=request_body(prompt),
                headers={"Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-Cache"] == "HIT"
                body = await resp.json()
            assert base64.b64decode(body["data"][0]["b64_json"]) == TINY["small"]


def test_results_document_shape() -> None:
    def run(
        scenario: str,
        case: str,
        target: str,
        rps: float,
        conns: int = 64,
        rss_peak_mb: float | None = None,
        upstream_calls: int | None = None,
    ) -> Run:
        return Run(
            scenario,
            case,
            target,
            workers=1,
            connections=conns,
            rps=rps,
            p50_ms=1.0,
            p99_ms=2.0,
            rss_peak_mb=rss_peak_mb,
            upstream_calls=upstream_calls,
        )

    runs = [
        run("1", "hit b64 large", "imagegate", 900.0, rss_peak_mb=120.0),
        run("1", "hit b64 large", "limit", 1000.0),
        run("1", "hit b64 large", "litellm", 10.0),
        run("3", "miss b64 small", "imagegate", 4.0, conns=1),
        run("3", "miss b64 small", "upstream", 4.5, conns=1),
        run("4", "500 identical misses", "imagegate", 800.0, conns=500, upstream_calls=1),
    ]
    scenarios, targets = analyse(runs)
    names = {t["target"] for t in targets}
    assert {
        "hit req/s >= 0.8 x limit",
        "hit p99 <= 2 x limit",
        "hit req/s >= 50 x LiteLLM",
        "peak RSS per worker, 1.5 MB images",
        "miss overhead p50 <= 5 ms",
        "coalescing: upstream calls",
    } <= names
    assert all(t["passed"] for t in targets)
    doc = {
        "schema": SCHEMA,
        "command": "python bench/run.py --quick",
        "quick": True,
        "started": "2026-01-01T00:00:00+00:00",
        "machine": {},
        "versions": {},
        "config": {},
        "runs": [r.to_json() for r in runs],
        "scenarios": scenarios,
        "targets": targets,
        "notes": [],
    }
    assert check_results(json.loads(json.dumps(doc))) == []
    assert check_results({**doc, "runs": [{"scenario": 1}]})  # a broken run is reported
    table = render_table(runs, markdown=True)
    assert table.count("\n") == len(runs) + 1
    assert re.search(r"\| 0\.90x \|", table)  # 900 / 1000 req/s vs the limit


def test_limit_app_is_bare() -> None:
    app = build_limit_app({}, {})
    assert not app.middlewares
    assert isinstance(app, web.Application)


def test_the_events_micro_benchmark_does_one_hit_per_case() -> None:
    from structlog.testing import capture_logs

    from bench.events_micro import cases
    from proxy.observability.logging import reset_logging

    reset_logging()  # the request line through structlog, where capture_logs sees it
    with capture_logs() as logs:
        for case in cases().values():
            case()
    # the direct calls, both hooks, the generic loop, and the first of the sampled hits
    assert [e["event"] for e in logs] == ["http.request_completed"] * 4
