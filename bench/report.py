"""The results document: machine facts, versions, every run, ratios, targets; and the table.

`results.json` keeps this shape (`SCHEMA`), so a later run can be compared with it:
`check_results(doc)` lists what is missing or mistyped (the smoke test uses it).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "Run",
    "check_results",
    "machine_facts",
    "render_lag",
    "render_table",
    "render_targets",
    "versions",
]

SCHEMA = "imagegate-bench/1"


@dataclass
class Run:
    """One measured load run of one server (gateway, limit, peer or upstream)."""

    scenario: str  # "1".."6"
    case: str  # e.g. "hit b64 small"
    target: str  # "imagegate" | "limit" | "litellm" | "upstream"
    workers: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    errors: int = 0
    max_ms: float = 0.0
    mb_per_s: float = 0.0
    rss_peak_mb: float | None = None  # the largest single process of the server's tree
    rss_total_mb: float | None = None  # the largest sum over the tree at one sample
    upstream_calls: int | None = None  # calls the fake upstream got during the run
    cpu_ms_per_req: float | None = None  # CPU time of the server's processes per request
    # CPU (in cores) that processes the bench did not start used during the run: noise.
    foreign_cpu_cores: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[str, str, int, int]:
        return (self.scenario, self.case, self.workers, self.connections)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "case": self.case,
            "target": self.target,
            "workers": self.workers,
            "connections": self.connections,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "max_ms": self.max_ms,
            "mb_per_s": self.mb_per_s,
            "rss_peak_mb": self.rss_peak_mb,
            "rss_total_mb": self.rss_total_mb,
            "upstream_calls": self.upstream_calls,
            "cpu_ms_per_req": self.cpu_ms_per_req,
            "foreign_cpu_cores": self.foreign_cpu_cores,
            "extra": self.extra,
        }


def _run(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(  # noqa: S603 - fixed local commands
            argv, capture_output=True, text=True, timeout=20, check=False
        )
        return (done.stdout or done.stderr).strip()
    return ""


def machine_facts() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    os_name = ""
    with contextlib.suppress(OSError), open("/etc/os-release") as handle:
        for line in handle:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
    }


def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(repo: Path, wrk: str | None, litellm: str | None) -> dict[str, Any]:
    commit = _run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = bool(_run(["git", "-C", str(repo), "status", "--porcelain", "--", "proxy", "policies"]))
    wrk_version = _run([wrk, "-v"]).splitlines()[0] if wrk else None
    return {
        "imagegate": _dist("imagegate"),
        "git_commit": commit or None,
        "git_dirty_gateway_code": dirty,
        "python": platform.python_version(),
        "aiohttp": _dist("aiohttp"),
        "diskcache": _dist("diskcache"),
        "pillow": _dist("pillow"),
        "openai": _dist("openai"),
        "wrk": wrk_version,
        "litellm": litellm,
    }


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "command": str,
    "quick": bool,
    "started": str,
    "machine": dict,
    "versions": dict,
    "config": dict,
    "runs": list,
    "scenarios": dict,
    "targets": list,
    "notes": list,
}
_RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "scenario": str,
    "case": str,
    "target": str,
    "workers": int,
    "connections": int,
    "rps": (int, float),
    "p50_ms": (int, float),
    "p99_ms": (int, float),
}
_TARGET_FIELDS: dict[str, type | tuple[type, ...]] = {
    "target": str,
    "case": str,
    "value": (int, float, type(None)),
    "threshold": str,
    "passed": (bool, type(None)),
}


def _check(obj: Any, fields: dict[str, type | tuple[type, ...]], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: not an object"]
    problems = []
    for name, kind in fields.items():
        if name not in obj:
            problems.append(f"{where}.{name}: missing")
        elif not isinstance(obj[name], kind) or (kind is int and isinstance(obj[name], bool)):
            problems.append(f"{where}.{name}: {type(obj[name]).__name__}")
    return problems


def check_results(doc: Any) -> list[str]:
    """What is wrong with a results document (empty: it has the documented shape)."""
    problems = _check(doc, _REQUIRED, "results")
    if problems:
        return problems
    if doc["schema"] != SCHEMA:
        problems.append(f"results.schema: {doc['schema']!r} is not {SCHEMA!r}")
    for i, run in enumerate(doc["runs"]):
        problems += _check(run, _RUN_FIELDS, f"runs[{i}]")
    for i, target in enumerate(doc["targets"]):
        problems += _check(target, _TARGET_FIELDS, f"targets[{i}]")
    return problems


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _note(run: Run) -> str:
    if "overhead_p50_ms" in run.extra:
        return f"p50 {run.extra['overhead_p50_ms']:+.1f} ms vs direct"
    burst = run.extra.get("burst")
    if burst is not None:
        cache = ", ".join(f"{k} {v}" for k, v in burst["x_cache"].items())
        return f"upstream calls {run.upstream_calls}; max {burst['max_ms']:.0f} ms; {cache}"
    if run.target == "upstream":
        return "the fake upstream, called directly"
    if run.target == "limit-uvloop":
        return "the limit on uvloop (informative: the issue's limit is plain aiohttp)"
    uv = run.extra.get("ratios", {}).get("rps_vs_limit_uvloop")
    return "" if uv is None else f"{uv:.2f}x the limit on uvloop"


def render_targets(targets: Iterable[dict[str, Any]], *, markdown: bool = False) -> str:
    """One line per target check: PASS, FAIL, or info."""
    lines = []
    if markdown:
        lines += ["| result | target | case | value | threshold |", "|---|---|---|---|---|"]
    for t in targets:
        mark = {True: "PASS", False: "FAIL", None: "info"}[t["passed"]]
        value = "-" if t["value"] is None else f"{t['value']:g}"
        if markdown:
            lines.append(f"| {mark} | {t['target']} | {t['case']} | {value} | {t['threshold']} |")
        else:
            lines.append(
                f"{mark:4}  {t['target']:<44} {t['case']:<40} {value:>9}  ({t['threshold']})"
            )
    return "\n".join(lines)


def render_table(runs: Iterable[Run], *, markdown: bool = False) -> str:
    """One line per run; gateway lines carry their ratios to the limit and the peer."""
    headers = [
        "sc",
        "case",
        "server",
        "w",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "peak RSS MB",
        "CPU ms/req",
        "req/s vs limit",
        "p99 vs limit",
        "req/s vs LiteLLM",
        "note",
    ]
    rows = []
    for run in sorted(runs, key=lambda r: r.scenario):  # stable: run order within a scenario
        ratios = run.extra.get("ratios", {})
        rows.append(
            [
                run.scenario,
                run.case,
                run.target,
                str(run.workers),
                str(run.connections),
                _fmt(run.rps),
                _fmt(run.p50_ms, 2),
                _fmt(run.p99_ms, 2),
                _fmt(run.rss_peak_mb, 0),
                _fmt(run.cpu_ms_per_req, 3),
                _ratio(ratios.get("rps_vs_limit")),
                _ratio(ratios.get("p99_vs_limit")),
                _ratio(ratios.get("rps_vs_peer")),
                _note(run),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(out)


def render_lag(runs: Iterable[Run], *, markdown: bool = False) -> str:
    """The gateway's event-loop lag per run, from its own /metrics."""
    headers = [
        "sc", "case", "w", "conns", "samples", "mean ms", "p99 <= ms", "max <= ms", "> 50 ms",
    ]  # fmt: skip
    rows = []
    for run in runs:
        lag = run.extra.get("loop_lag")
        if not lag or not lag.get("samples"):
            continue
        rows.append(
            [
                run.scenario,
                run.case,
                str(run.workers),
                str(run.connections),
                str(lag["samples"]),
                _fmt(lag.get("mean_ms"), 2),
                _fmt(lag.get("p99_le_ms"), 1),
                _fmt(lag.get("max_le_ms"), 1),
                str(lag.get("over_50ms", "-")),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    return "\n".join(["  ".join(headers)] + ["  ".join(r) for r in rows])
