"""The round-two tables of BENCHMARKS.md (issues 14 and 16), from one results file.

    .venv/bin/python -m bench.round_two bench/results-round-two.json

Prints Markdown: the machine's load, the targets (met / not met), the store hits, the p99
ratios of every hit case at 64 connections, the added CPU per hit, the mix, the miss against
LiteLLM, shared mode beside embedded, and the event-loop lag per run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.report import Run, render_lag
from bench.targets import analyse

__all__ = ["main", "render"]


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _pair(runs: list[Run], run: Run, target: str) -> Run | None:
    return next((r for r in runs if r.target == target and r.key() == run.key()), None)


def _hits(runs: list[Run]) -> list[str]:
    rows = []
    for run in runs:
        if run.target != "imagegate" or run.scenario not in ("1", "2", "6", "7"):
            continue
        limit = _pair(runs, run, "limit")
        r = run.extra.get("ratios", {})
        lag = run.extra.get("loop_lag") or {}
        rows.append(
            [
                run.scenario,
                run.case,
                str(run.workers),
                str(run.connections),
                _f(run.rps),
                _f(limit.rps if limit else None),
                _x(r.get("rps_vs_limit")),
                f"{run.p50_ms:.2f} / {run.p99_ms:.2f}",
                "-" if limit is None else f"{limit.p50_ms:.2f} / {limit.p99_ms:.2f}",
                _x(r.get("p99_vs_limit")),
                _x(r.get("p99_vs_own_p50")),
                _f(run.cpu_ms_per_req and run.cpu_ms_per_req * 1000, 0),
                _f(limit.cpu_ms_per_req * 1000 if limit and limit.cpu_ms_per_req else None, 0),
                _f(r.get("added_cpu_us"), 0),
                _x(r.get("rps_vs_peer")),
                _f(lag.get("p99_le_ms"), 0),
                _f(run.foreign_cpu_cores, 2),
            ]
        )
    return _table(
        [
            "sc",
            "case",
            "w",
            "conns",
            "req/s",
            "limit req/s",
            "vs limit",
            "p50 / p99 ms",
            "limit p50 / p99 ms",
            "p99 vs limit",
            "p99 / own p50",
            "CPU µs/req",
            "limit CPU µs/req",
            "added CPU µs",
            "vs LiteLLM",
            "loop lag p99 <= ms",
            "foreign cores",
        ],
        rows,
    )


def _others(runs: list[Run], scenarios: tuple[str, ...]) -> list[str]:
    rows = []
    for run in runs:
        if run.scenario not in scenarios:
            continue
        lag = run.extra.get("loop_lag") or {}
        note = run.extra.get("note", "")
        if "overhead_p50_ms" in run.extra:
            note = f"added p50 {run.extra['overhead_p50_ms']:+.1f} ms"
        if "x_cache" in run.extra:
            note = f"x-cache {run.extra['x_cache']}, HTTP {run.extra.get('statuses')}"
        rows.append(
            [
                run.scenario,
                run.case,
                run.target,
                str(run.workers),
                str(run.connections),
                _f(run.rps),
                f"{run.p50_ms:.2f} / {run.p99_ms:.2f}",
                _f(run.cpu_ms_per_req, 3),
                str(run.errors),
                "-" if run.upstream_calls is None else str(run.upstream_calls),
                _f(lag.get("p99_le_ms"), 0),
                _f(run.foreign_cpu_cores, 2),
                note,
            ]
        )
    return _table(
        [
            "sc",
            "case",
            "server",
            "w",
            "conns",
            "req/s",
            "p50 / p99 ms",
            "CPU ms/req",
            "errors",
            "upstream calls",
            "loop lag p99 <= ms",
            "foreign cores",
            "note",
        ],
        rows,
    )


def _targets(targets: list[dict[str, Any]]) -> list[str]:
    mark = {True: "met", False: "**not met**", None: "info"}
    rows = [
        [
            mark[t["passed"]],
            t["target"],
            t["case"],
            "-" if t["value"] is None else f"{t['value']:g}",
            t["threshold"],
        ]
        for t in targets
    ]
    return _table(["result", "target", "case", "value", "threshold"], rows)


def _lag(runs: list[Run]) -> list[str]:
    return render_lag(runs, markdown=True).splitlines()


def render(doc: dict[str, Any]) -> str:
    runs = [Run(**r) for r in doc["runs"]]
    _, targets = analyse(runs, doc.get("config", {}))
    m = doc["machine"]
    foreign = [r.foreign_cpu_cores for r in runs if r.foreign_cpu_cores is not None]
    lines = [
        f"Command: `{doc['command']}`, started {doc['started']}, {doc.get('seconds_total')} s, "
        f"commit `{doc['versions'].get('git_commit')}`.",
        f"Load average (1, 5, 15 min) at start {m.get('loadavg_start')}, at end "
        f"{m.get('loadavg_end')}; foreign_cpu_cores per run: min {min(foreign, default=0):.2f}, "
        f"max {max(foreign, default=0):.2f}.",
        "",
        "### Targets",
        "",
        *_targets(targets),
        "",
        "### Hits (memory tier: scenarios 1, 2, 6; stores: 7)",
        "",
        *_hits(runs),
        "",
        "### Misses, coalescing, the mix, shared mode",
        "",
        *_others(runs, ("3", "4", "8", "9")),
        "",
        "### Event-loop lag per run (the gateway's own /metrics)",
        "",
        *_lag(runs),
        "",
        f"Reserve + settle: {doc['config'].get('reserve_settle')}; "
        f"with synchronous_commit=off: {doc['config'].get('reserve_settle_async_commit')}",
        "",
        *(f"- note: {n}" for n in doc.get("notes", [])),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(render(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
