"""Scenario 9 (issue 14): shared mode beside embedded, in the same run.

Replicas of `imagegate serve` on one shared config (Redis prefix, PostgreSQL database and
moto S3 bucket of this run only; `bench.shared_backends`), memory tier off so every hit
reads Redis and S3. Measured: hits on one replica and on two (two wrk at 32 connections
each, at once), a miss's added latency at 1 connection, 500 identical misses spread over
three replicas (upstream calls), and the reserve + settle round trip through the PostgreSQL
Ledger adapter. When the gateway refuses `backend = "shared"`, or serves without writing to
Redis (not wired yet), the replica runs are skipped with the reason in `notes`.
"""

from __future__ import annotations

import asyncio
import threading

from bench.gateway import request_body
from bench.load import LoadResult, burst, lua_script, run_wrk
from bench.mix import send_all
from bench.report import Run
from bench.scenarios import GEN, JSON, Harness, Server, _miss_script, _phase, http
from bench.shared_backends import (
    SharedBackends,
    redis_keys,
    reserve_settle_async_commit,
    reserve_settle_rounds,
    shared_config,
    start_backends,
    stop_backends,
)

__all__ = ["phase_shared"]

ROTATION = 500  # distinct requests primed over HTTP, then rotated by wrk


def _replica(h: Harness, b: SharedBackends, name: str) -> Server:
    return h.start_gateway(
        name, h.dir / f"data-{name}", 1, memory_mb=0, extra=shared_config(b), backend="shared"
    )


def _two_at_once(h: Harness, servers: list[Server], script: str) -> Run:
    """Both replicas loaded at once (32 connections each): req/s summed, worst p99."""
    results: list[LoadResult] = []

    def one(server: Server) -> None:
        results.append(run_wrk(server.url(GEN), script, connections=32, seconds=h.cfg.seconds))

    threads = [threading.Thread(target=one, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = Run(
        scenario="9",
        case="shared hit b64 small, 2 replicas",
        target="imagegate",
        workers=2,
        connections=64,
        rps=round(sum(r.rps for r in results), 1),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        max_ms=max(r.max_ms for r in results),
        extra={"replicas": len(servers), "note": "two wrk runs at once, 32 connections each"},
    )
    h.runs.append(run)
    h.log(f"  [9] {run.case}: {run.rps:,.1f} req/s, p99 {run.p99_ms:.2f} ms")
    return run


def _wired(h: Harness, b: SharedBackends, gw: Server) -> str | None:
    """None when a miss on the replica wrote to Redis; else why shared mode is not on."""
    before = redis_keys(b.prefix)
    body = request_body(f"bench shared probe {h.run_id}").encode()
    status, _, _ = http("POST", gw.url(GEN), body, JSON)
    if status != 200:
        return f"a miss on a shared-mode replica answered HTTP {status}"
    if redis_keys(b.prefix) <= before:
        return (
            '`[storage] backend = "shared"` was accepted but nothing was written under the '
            "run's Redis prefix: shared mode is not wired into the gateway on this commit"
        )
    return None


def _coalesce_three(h: Harness, servers: list[Server]) -> None:
    body = request_body(f"bench shared coalesce {h.run_id}").encode()
    before = h.quiet_upstream_calls()
    per = [h.cfg.burst // 3 + (1 if i < h.cfg.burst % 3 else 0) for i in range(3)]

    async def all_three() -> list[object]:
        return await asyncio.gather(
            *(burst(s.url(GEN), body, n) for s, n in zip(servers, per, strict=True))
        )

    results = asyncio.run(all_three())
    calls = h.quiet_upstream_calls() - before
    cache: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for result in results:
        for k, v in result.x_cache.items():  # type: ignore[attr-defined]
            cache[k] = cache.get(k, 0) + v
        for code, v in result.statuses.items():  # type: ignore[attr-defined]
            statuses[str(code)] = statuses.get(str(code), 0) + v
    run = Run(
        scenario="9",
        case=f"{h.cfg.burst} identical misses, 3 replicas",
        target="imagegate",
        workers=3,
        connections=h.cfg.burst,
        rps=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        requests=h.cfg.burst,
        errors=h.cfg.burst - statuses.get("200", 0),
        upstream_calls=calls,
        extra={"x_cache": cache, "statuses": statuses, "replicas": 3},
    )
    h.runs.append(run)
    h.log(f"  [9] {run.case}: upstream calls {calls}, x-cache {cache}, statuses {statuses}")


def phase_shared(h: Harness) -> None:
    with _phase(h, "scenario 9: shared mode (Redis, PostgreSQL, moto S3)"):
        try:
            b = start_backends(h.procs)
        except Exception as exc:  # any missing server: skip, say which
            h.notes.append(f"shared mode skipped: its servers could not be set up: {exc}"[:400])
            return
    try:
        rounds = reserve_settle_rounds(b.dsn, 100 if h.cfg.seconds < 5 else 1_000)
        h.extra["reserve_settle"] = rounds
        h.log(f"  [9] reserve + settle through PgLedger: {rounds}")
        _replicas(h, b)
        rounds_off = reserve_settle_async_commit(b, rounds["rounds"])
        h.extra["reserve_settle_async_commit"] = rounds_off
        h.log(f"  [9] the same with synchronous_commit = off: {rounds_off}")
    finally:
        stop_backends(b)


def _replicas(h: Harness, b: SharedBackends) -> None:
    servers: list[Server] = []
    try:
        try:
            servers.append(_replica(h, b, "shared-a"))
        except RuntimeError as exc:
            h.notes.append(f'shared replicas skipped: backend = "shared" refused: {exc}'[:400])
            return
        why = _wired(h, b, servers[0])
        if why is not None:
            h.notes.append(f"shared replicas skipped: {why}")
            h.log(f"  [9] SKIPPED: {why}")
            return
        bodies = [request_body(f"bench shared hit {i} {h.run_id}") for i in range(ROTATION)]
        asyncio.run(send_all(servers[0].url(""), bodies))
        script = lua_script(method="POST", bodies=bodies, headers=JSON)
        h.measure(
            "9",
            "shared hit b64 small, 1 replica",
            servers[0],
            connections=64,
            script=script,
            path=GEN,
            rotation=len(bodies),
        )
        servers.append(_replica(h, b, "shared-b"))
        _two_at_once(h, servers, script)
        h.measure(
            "9",
            "shared miss b64 small",
            servers[0],
            connections=1,
            script=_miss_script(h, "shared"),
            path=GEN,
            warmup=False,
        )
        servers.append(_replica(h, b, "shared-c"))
        _coalesce_three(h, servers)
    finally:
        h.stop(*servers)
