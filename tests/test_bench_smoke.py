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
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.assets import make_png
from bench.gateway import populate, populate_plan, request_body, write_config
from bench.limit import build_limit_app, load_bodies
from bench.load import burst, lua_script, parse_wrk, percentile
from bench.loop_lag import lag_between, parse_lag
from bench.mix import (
    KEYS,
    METRICS_TOKEN,
    MISS,
    keys_config,
    mix_lua,
    mix_slots,
    prime_bodies,
    slot_kind,
)
from bench.procs import RssSampler, tree_pids
from bench.profile_hit import attribute, summarize
from bench.report import SCHEMA, Run, check_results, render_table
from bench.round_two import render as render_round_two
from bench.run import analyse
from bench.shared_backends import SharedBackends, shared_config
from bench.store_hits import rotation, small_count, store_plan
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
        "hit p99 <= 2 x limit (c64)",
        "hit req/s vs LiteLLM (retired 50x target)",
        "peak RSS per worker, 1.5 MB images",
        "miss added p50 <= LiteLLM's (no LiteLLM)",
        "coalescing: upstream calls",
    } <= names
    assert all(t["passed"] is not False for t in targets)
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


# -- round two: store hits, the mix, the loop lag, shared mode (issues 14 and 16) ----------


def _placeholder_config(tmp_path: Path, extra: str = "", metrics_key: str | None = None) -> Path:
    return write_config(
        tmp_path / "config.toml",
        port=0,
        data_dir=tmp_path / "data",
        upstream_base_url=None,
        placeholder=True,
        extra=extra,
        metrics_key=metrics_key,
    )


def test_store_plan_and_rotations_name_entries_of_each_size() -> None:
    plan = list(store_plan(100, TINY["small"], TINY["large"]))
    assert len(plan) == 100
    smalls = [p for p in plan if p[1] == TINY["small"]]
    assert len(smalls) == small_count(100) == 90
    assert [n for _, _, n in smalls[:11]] == [2] + [1] * 9 + [2]  # every tenth holds two
    assert all(LARGE_MARK in prompt for prompt, image, _ in plan if image == TINY["large"])
    small_rotation, large_rotation = rotation(100, "small", 30), rotation(100, "large", 30)
    assert len(small_rotation) == 30 and len(set(small_rotation)) == 30
    assert len(large_rotation) == 10  # only ten large entries exist
    assert all(LARGE_MARK in json.loads(b)["prompt"] for b in large_rotation)


async def test_store_entries_and_the_mix_are_hits_with_keys_on(tmp_path: Path) -> None:
    """The data dir of scenarios 7 and 8, served with the mix's keys: n=2 and url mode hit,
    a key is required, and /metrics (with the scrape token) carries the lag histogram."""
    config = _placeholder_config(tmp_path, keys_config(), metrics_key=METRICS_TOKEN)
    assert populate_plan(config, store_plan(100, TINY["small"], TINY["large"])) == 100
    settings = load_settings(config, environ={})
    assert len(settings.cost.keys) == len(KEYS) and settings.cache.share_across_teams
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {KEYS[3]}"}
    async with TestServer(create_app(settings)) as server, aiohttp.ClientSession() as session:
        gen = server.make_url("/v1/images/generations")
        for body, images in (
            (request_body("bench many 0", n=2), 2),
            (request_body("bench many 1", response_format="url"), 1),
            (rotation(100, "large", 1)[0], 1),
        ):
            async with session.post(gen, data=body, headers=auth) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-Cache"] == "HIT"
                assert len((await resp.json())["data"]) == images
        async with session.post(gen, data=request_body("bench many 1")) as resp:
            assert resp.status == 401
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with session.get(server.make_url("/metrics"), headers=bearer) as resp:
            assert resp.status == 200
            assert parse_lag(await resp.text()) is not None


def test_mix_sequence_is_zipf_with_the_asked_hit_share() -> None:
    slots = mix_slots(1000, 5000, hit_share=0.8, seed=3)
    assert slots == mix_slots(1000, 5000, hit_share=0.8, seed=3)  # reproducible
    assert sum(1 for k in slots if k == MISS) == 1000
    hits = Counter(k for k in slots if k != MISS)
    assert all(0 <= k < 1000 for k in hits)
    (top, top_count), *_ = hits.most_common(1)
    assert top == 0 and top_count > 5 * hits.get(7919 * 50 % 1000, 0)  # rank 1 >> rank 51
    assert slot_kind(3, 5) == "hit-url-1" and slot_kind(1, 20) == "hit-b64-2"
    assert slot_kind(10, MISS) == "miss-b64-2"
    bodies = prime_bodies(slots, 5)
    assert len(bodies) == 5 and json.loads(bodies[0])["prompt"] == "bench many 0"


def test_mix_script_builds_bodies_keys_and_limit_paths() -> None:
    gateway = mix_lua([0, MISS, 7], keys=KEYS[:2])
    assert "local slots = {0,-1,7}" in gateway and f"Bearer {KEYS[1]}" in gateway
    assert "limit_paths = false" in gateway and "BENCH_JSON" in gateway
    limit = mix_lua([0, MISS], keys=(), limit_paths=True)
    assert "limit_paths = true" in limit and "local keys = {}" in limit
    assert '"/mix-" .. (k < 0 and "miss" or "hit")' in limit


async def test_limit_mix_miss_calls_the_upstream_first() -> None:
    upstream = build_upstream_app(latency_s=0.0, images=TINY)
    async with TestServer(upstream) as up, aiohttp.ClientSession() as session:
        posts = {"mix-miss-b64-1": b'{"data": [1]}', "mix-hit-b64-1": b'{"data": [2]}'}
        app = build_limit_app(posts, {}, str(up.make_url("/v1/images/generations")))
        async with TestServer(app) as limit:
            for case, answer in (("mix-miss-b64-1", b'{"data": [1]}'), ("mix-hit-b64-1", None)):
                async with session.post(limit.make_url(f"/{case}"), data=request_body("x")) as r:
                    assert r.status == 200
                    assert await r.read() == (answer or posts[case])
        async with session.get(up.make_url("/_bench/stats")) as resp:
            assert (await resp.json())["calls"] == 1  # the miss kind only


def test_loop_lag_between_two_scrapes() -> None:
    def exposition(counts: list[int], total: float) -> str:
        bounds = ["0.001", "0.01", "0.05", "0.1", "+Inf"]
        lines = [
            f'imagegate_event_loop_lag_seconds_bucket{{le="{b}"}} {c}'
            for b, c in zip(bounds, counts, strict=True)
        ]
        return "\n".join(
            [
                *lines,
                f"imagegate_event_loop_lag_seconds_sum {total}",
                f"imagegate_event_loop_lag_seconds_count {counts[-1]}",
            ]
        )

    before = parse_lag(exposition([10, 10, 10, 10, 10], 0.005))
    after = parse_lag(exposition([50, 150, 195, 209, 210], 2.005))
    lag = lag_between(before, after)
    assert lag == {
        "samples": 200,
        "mean_ms": 10.0,
        "p99_le_ms": 100.0,
        "max_le_ms": None,  # one observation above the largest bucket
        "over_50ms": 15,
    }
    assert parse_lag("# nothing here") is None
    assert lag_between(None, None)["samples"] == 0


def test_round_two_targets() -> None:
    def run(
        sc: str,
        case: str,
        target: str,
        rps: float,
        cpu: float,
        p50: float,
        p99: float,
        conns: int = 64,
    ) -> Run:
        return Run(sc, case, target, 1, conns, rps, p50, p99, cpu_ms_per_req=cpu)

    runs = [
        run("1", "hit b64 small", "imagegate", 600.0, 0.050, 2.0, 6.0),
        run("1", "hit b64 small", "limit", 1000.0, 0.040, 2.0, 4.0),
        run("7", "store hit b64 small", "imagegate", 400.0, 0.120, 5.0, 30.0),
        run("7", "store hit b64 small", "limit", 1000.0, 0.040, 2.0, 4.0),
        run("9", "shared hit b64 small, 1 replica", "imagegate", 300.0, 0.2, 5.0, 9.0),
        run("3", "miss b64 small", "imagegate", 4.0, 12.0, 215.0, 220.0, conns=1),
        run("3", "miss b64 small", "upstream", 4.0, 0.5, 201.0, 202.0, conns=1),
        run("3", "miss b64 small", "litellm", 4.0, 12.0, 213.0, 219.0, conns=1),
    ]
    extra = {"reserve_settle": {"rounds": 10, "p99_ms": 9.0, "synchronous_commit": "on"}}
    _, targets = analyse(runs, extra)
    got = {(t["target"], t["case"].split(",")[0]): t for t in targets}

    def passed(name: str, case: str) -> bool | None:
        return got[(name, case)]["passed"]

    assert got[("added CPU per memory hit <= 0.6 x limit's CPU/request", "hit b64 small")][
        "value"
    ] == pytest.approx(0.25)
    assert passed("added CPU per memory hit <= 0.6 x limit's CPU/request", "hit b64 small")
    assert passed("hit req/s >= 0.8 x limit (retired)", "hit b64 small") is None
    assert passed("hit p99 <= 2 x limit (c64)", "hit b64 small") is True  # 1.5x
    assert passed("store hit req/s >= 0.5 x limit", "store hit b64 small") is False  # 0.4x
    assert passed("store hit p99 <= 3 x own p50", "store hit b64 small") is False  # 6x
    assert passed("10 KB store hit CPU <= 2.5 x limit's", "store hit b64 small") is False
    assert passed("miss added p50 <= LiteLLM's", "miss b64 small") is False  # +14 vs +12 ms
    shared = got[("shared hit >= 0.5 x embedded store hit", "shared hit b64 small")]
    assert shared["value"] == 0.75 and shared["passed"] is True
    assert passed("reserve + settle p99 on local PostgreSQL", "10 rounds") is False


def test_shared_config_is_the_design_contract(tmp_path: Path) -> None:
    backends = SharedBackends("imagegate_bench_x", "imagegate-bench-x:", "http://127.0.0.1:1", "b")
    config = write_config(
        tmp_path / "shared.toml",
        port=0,
        data_dir=tmp_path / "data",
        upstream_base_url=None,
        memory_mb=0,
        backend="shared",
        extra=shared_config(backends),
    )
    settings = load_settings(config, environ={})
    assert settings.storage.backend == "shared" and settings.cache.memory_mb == 0
    assert settings.redis.prefix == "imagegate-bench-x:"
    assert settings.postgres.dsn.reveal().endswith("/imagegate_bench_x")
    assert settings.s3.bucket == "b" and settings.s3.endpoint_url == "http://127.0.0.1:1"


def test_round_two_tables_render_from_a_results_document() -> None:
    runs = [
        Run(
            "7",
            "store hit b64 small",
            "imagegate",
            1,
            64,
            400.0,
            5.0,
            30.0,
            cpu_ms_per_req=0.1,
            extra={
                "loop_lag": {
                    "samples": 9,
                    "mean_ms": 3.0,
                    "p99_le_ms": 25.0,
                    "max_le_ms": 50.0,
                    "over_50ms": 0,
                }
            },
        ),
        Run("7", "store hit b64 small", "limit", 1, 64, 1000.0, 2.0, 4.0, cpu_ms_per_req=0.04),
        Run("8", "mix 80% hits, Zipf, keys", "imagegate", 2, 64, 90.0, 50.0, 800.0),
    ]
    doc = {
        "command": "python bench/run.py",
        "started": "2026-12-03T15:45:00+00:00",
        "seconds_total": 1.0,
        "versions": {"git_commit": "abc1234"},
        "machine": {"loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.0, 1.0]},
        "config": {"reserve_settle": {"rounds": 5, "p99_ms": 2.0, "synchronous_commit": "on"}},
        "runs": [r.to_json() for r in runs],
        "notes": ["shared replicas skipped: why"],
    }
    text = render_round_two(doc)
    assert "| **not met** | store hit req/s >= 0.5 x limit | store hit b64 small" in text
    assert "| met | reserve + settle p99 on local PostgreSQL |" in text
    assert "| 7 | store hit b64 small | 1 | 64 | 400.0 | 1,000.0 | 0.40x |" in text
    assert "| 8 | mix 80% hits, Zipf, keys | imagegate | 2 | 64 |" in text
    assert "- note: shared replicas skipped: why" in text


def test_profile_parts_do_not_overlap_and_sum_to_all_samples() -> None:
    raw = "\n".join(
        [
            "run (uvloop/__init__.py:1);_handle_request (aiohttp/web_protocol.py:2);"
            "request_middleware (proxy/middlewares.py:3);_writelines (aiohttp/http_writer.py:4) 6",
            "run (uvloop/__init__.py:1);request_middleware (proxy/middlewares.py:3);"
            "request_key (policies/normalize.py:9);asdict (dataclasses.py:7) 3",
            "run (uvloop/__init__.py:1);_handle_request (aiohttp/web_protocol.py:2) 1",
        ]
    )
    parts = dict(attribute(raw))
    assert parts == {
        "sending the response (socket write)": 60.0,
        "request key (canonical JSON, sha256)": 30.0,
        "aiohttp (HTTP parsing, dispatch, response headers)": 10.0,
    }
    assert dict(summarize(raw)["self"])["asdict (dataclasses.py)"] == 30.0
