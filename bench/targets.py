"""Ratios for every gateway run, and the targets of issues 7, 14 and 16, each passed or not.

Issue 16 retired two of issue 7's: the 10 KB hit at 64 connections against 0.8x the limit
(replaced by the added CPU per hit) and "50x LiteLLM" (still reported, as information).
"""

from __future__ import annotations

from typing import Any

from bench.report import Run

__all__ = ["analyse"]

HIT_SCENARIOS = ("1", "2", "7")


def _find(runs: list[Run], like: Run, target: str) -> Run | None:
    for run in runs:
        if run.target == target and run.key() == like.key():
            return run
    return None


def _target(
    name: str, case: str, value: float | None, threshold: str, passed: bool | None
) -> dict[str, Any]:
    return {
        "target": name,
        "case": case,
        "value": None if value is None else round(value, 3),
        "threshold": threshold,
        "passed": passed,
    }


def _ratios(run: Run, limit: Run | None, peer: Run | None, uv: Run | None) -> dict[str, float]:
    ratios: dict[str, float] = {}
    if uv is not None and uv.rps:
        ratios["rps_vs_limit_uvloop"] = round(run.rps / uv.rps, 3)
    if limit is not None and limit.rps:
        ratios["rps_vs_limit"] = round(run.rps / limit.rps, 3)
        ratios["p99_vs_limit"] = round(run.p99_ms / limit.p99_ms, 3) if limit.p99_ms else 0
        if run.cpu_ms_per_req and limit.cpu_ms_per_req:
            ratios["cpu_vs_limit"] = round(run.cpu_ms_per_req / limit.cpu_ms_per_req, 3)
            added = run.cpu_ms_per_req - limit.cpu_ms_per_req
            ratios["added_cpu_us"] = round(added * 1000, 1)
            ratios["added_cpu_vs_limit_cpu"] = round(added / limit.cpu_ms_per_req, 3)
    if peer is not None and peer.rps and run.scenario in ("1", "2", "5", "6", "7", "8"):
        ratios["rps_vs_peer"] = round(run.rps / peer.rps, 1)
        ratios["p50_vs_peer"] = round(run.p50_ms / peer.p50_ms, 3) if peer.p50_ms else 0
    if run.p50_ms:
        ratios["p99_vs_own_p50"] = round(run.p99_ms / run.p50_ms, 2)
    return ratios


def _hit_targets(run: Run, ratios: dict[str, float], label: str) -> list[dict[str, Any]]:
    out = []
    small_c64 = "small" in run.case and run.connections >= 64
    if run.scenario in ("1", "2") and "rps_vs_limit" in ratios:
        v = ratios["rps_vs_limit"]
        retired = small_c64  # issue 16: not a target any more; the added CPU is
        out.append(
            _target(
                "hit req/s >= 0.8 x limit" + (" (retired)" if retired else ""),
                label,
                v,
                ">= 0.80",
                None if retired else v >= 0.8,
            )
        )
    if run.connections >= 64 and "p99_vs_limit" in ratios:
        p = ratios["p99_vs_limit"]
        out.append(_target("hit p99 <= 2 x limit (c64)", label, p, "<= 2.00", p <= 2.0))
    if run.scenario == "7" and run.connections >= 64 and "rps_vs_limit" in ratios:
        v = ratios["rps_vs_limit"]
        out.append(_target("store hit req/s >= 0.5 x limit", label, v, ">= 0.50", v >= 0.5))
        if "large" in run.case:
            out.append(_target("1.5 MB store hit >= 0.9 x limit", label, v, ">= 0.90", v >= 0.9))
        own = ratios["p99_vs_own_p50"]
        out.append(_target("store hit p99 <= 3 x own p50", label, own, "<= 3.00", own <= 3))
        if "small" in run.case and "cpu_vs_limit" in ratios:
            c = ratios["cpu_vs_limit"]
            out.append(
                _target("10 KB store hit CPU <= 2.5 x limit's", label, c, "<= 2.50", c <= 2.5)
            )
    if run.scenario in ("1", "6") and small_c64 and "added_cpu_vs_limit_cpu" in ratios:
        a = ratios["added_cpu_vs_limit_cpu"]
        out.append(
            _target(
                "added CPU per memory hit <= 0.6 x limit's CPU/request",
                label,
                a,
                "<= 0.60",
                a <= 0.6,
            )
        )
    if run.scenario in ("1", "6") and "rps_vs_peer" in ratios:
        v = ratios["rps_vs_peer"]
        out.append(_target("hit req/s vs LiteLLM (retired 50x target)", label, v, "-", None))
    if "large" in run.case and run.scenario in HIT_SCENARIOS and run.rss_peak_mb is not None:
        v = run.rss_peak_mb
        out.append(_target("peak RSS per worker, 1.5 MB images", label, v, "< 300 MB", v < 300))
    return out


def _miss_targets(runs: list[Run], run: Run, peer: Run | None, label: str) -> list[dict[str, Any]]:
    direct = next(
        (r for r in runs if r.target == "upstream" and r.connections == run.connections), None
    )
    if direct is None:
        return []
    over = run.p50_ms - direct.p50_ms
    run.extra["overhead_p50_ms"] = round(over, 2)
    run.extra["overhead_p99_ms"] = round(run.p99_ms - direct.p99_ms, 2)
    if run.scenario == "9":
        return [_target("shared miss added latency p50 (informative)", label, over, "-", None)]
    peer_over = None
    if peer is not None:
        peer_over = round(peer.p50_ms - direct.p50_ms, 2)
        peer.extra["overhead_p50_ms"] = peer_over
    if peer_over is None:
        return [_target("miss added p50 <= LiteLLM's (no LiteLLM)", label, over, "-", None)]
    if run.connections != 1:  # concurrent misses queue on the image check: informative
        name = "miss added p50 vs LiteLLM's (informative)"
        return [_target(name, label, over, f"LiteLLM {peer_over:g} ms", None)]
    name = "miss added p50 <= LiteLLM's"
    return [_target(name, label, over, f"<= {peer_over:g} ms", over <= peer_over)]


def _shared_targets(runs: list[Run], extra: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    embedded = next(
        (
            r
            for r in runs
            if r.scenario == "7"
            and r.target == "imagegate"
            and r.case == "store hit b64 small"
            and r.connections >= 64
        ),
        None,
    )
    for run in runs:
        if run.scenario != "9" or run.target != "imagegate" or "shared hit" not in run.case:
            continue
        if embedded is not None and embedded.rps:
            v = round(run.rps / embedded.rps, 3)
            run.extra.setdefault("ratios", {})["rps_vs_embedded_store_hit"] = v
            ok = v >= 0.5 if "1 replica" in run.case else None
            out.append(
                _target("shared hit >= 0.5 x embedded store hit", run.case, v, ">= 0.50", ok)
            )
    rs = extra.get("reserve_settle")
    if rs:
        out.append(
            _target(
                "reserve + settle p99 on local PostgreSQL",
                f"{rs['rounds']} rounds, synchronous_commit={rs.get('synchronous_commit')}",
                rs["p99_ms"],
                "<= 3 ms",
                rs["p99_ms"] <= 3,
            )
        )
    off = extra.get("reserve_settle_async_commit")
    if off:
        out.append(
            _target(
                "reserve + settle p99, synchronous_commit=off (informative)",
                f"{off['rounds']} rounds",
                off["p99_ms"],
                "-",
                None,
            )
        )
    return out


def analyse(
    runs: list[Run], extra: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ratios for every gateway run; the issues' targets, each passed, failed or informative."""
    targets: list[dict[str, Any]] = []
    scenarios: dict[str, Any] = {}
    for run in runs:
        if run.target != "imagegate":
            continue
        limit, peer = _find(runs, run, "limit"), _find(runs, run, "litellm")
        ratios = _ratios(run, limit, peer, _find(runs, run, "limit-uvloop"))
        run.extra["ratios"] = {**run.extra.get("ratios", {}), **ratios}
        label = f"{run.case}, w{run.workers}, c{run.connections}"
        scenarios.setdefault(run.scenario, []).append(
            {
                "case": run.case,
                "workers": run.workers,
                "connections": run.connections,
                "imagegate": {
                    "rps": run.rps,
                    "p50_ms": run.p50_ms,
                    "p99_ms": run.p99_ms,
                    "cpu_ms_per_req": run.cpu_ms_per_req,
                },
                "limit": None
                if limit is None
                else {
                    "rps": limit.rps,
                    "p99_ms": limit.p99_ms,
                    "cpu_ms_per_req": limit.cpu_ms_per_req,
                },
                "litellm": None if peer is None else {"rps": peer.rps, "p50_ms": peer.p50_ms},
                "ratios": ratios,
                "loop_lag": run.extra.get("loop_lag"),
            }
        )
        if run.scenario in (*HIT_SCENARIOS, "6"):
            targets += _hit_targets(run, ratios, label)
        if run.scenario == "8" and "rps_vs_limit" in ratios:
            targets.append(
                _target(
                    "mix req/s vs limit (informative)", label, ratios["rps_vs_limit"], "-", None
                )
            )
        if "miss b64 small" in run.case:
            targets += _miss_targets(runs, run, peer, label)
        if run.upstream_calls is not None and "identical misses" in run.case:
            calls = run.upstream_calls
            targets.append(_target("coalescing: upstream calls", label, calls, "== 1", calls == 1))
            ok = run.requests - run.errors
            targets.append(
                _target(
                    "coalescing: every request answered 200",
                    label,
                    ok,
                    f"== {run.requests}",
                    run.errors == 0,
                )
            )
    targets += _entries_flat(runs)
    targets += _shared_targets(runs, extra or {})
    return scenarios, targets


def _entries_flat(runs: list[Run]) -> list[dict[str, Any]]:
    out = []
    big = [r for r in runs if r.scenario == "5" and r.target == "imagegate"]
    for conns in sorted({r.connections for r in big}):
        pair = sorted((r for r in big if r.connections == conns), key=lambda r: r.extra["entries"])
        if len(pair) == 2 and pair[0].p50_ms:
            v = pair[1].p50_ms / pair[0].p50_ms
            label = (
                f"{pair[1].extra['entries']:,} vs {pair[0].extra['entries']:,} entries, c{conns}"
            )
            out.append(
                _target("hit p50 does not grow with entries", label, v, "<= 1.25", v <= 1.25)
            )
    return out
