"""Benchmark imagegate beside the limit (bare aiohttp) and the peer (LiteLLM proxy).

    .venv/bin/python bench/run.py [--quick] [--scenarios 1,2,3,4,5,6] [--out bench/results.json]

Starts everything itself on 127.0.0.1 (a fake OpenAI upstream, imagegate, the limit, the
peer), runs the scenarios of issue 7 with wrk, prints a table, writes the results JSON, and
stops every process it started, also on Ctrl-C and on errors. `--table FILE` prints the
Markdown table of an earlier results file without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `python bench/run.py` puts bench/ first, not the repo
    sys.path.insert(0, str(_REPO))

from bench.load import wrk_path  # noqa: E402
from bench.peer import PeerUnavailable, default_venv, ensure_litellm  # noqa: E402
from bench.report import (  # noqa: E402
    SCHEMA,
    Run,
    machine_facts,
    render_table,
    render_targets,
    versions,
)
from bench.scenarios import BenchConfig, Harness, run_all  # noqa: E402

__all__ = ["analyse", "main"]


def _ensure_wrk() -> str:
    found = wrk_path()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],  # noqa: S607
            check=False,
            stdout=subprocess.DEVNULL,
        )
        found = wrk_path()
    if not found:
        raise SystemExit("bench: wrk is needed (Debian: apt-get install wrk)")
    return found


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


def analyse(runs: list[Run]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ratios for every gateway run; the issue's targets, each passed or failed."""
    targets: list[dict[str, Any]] = []
    scenarios: dict[str, Any] = {}
    for run in runs:
        if run.target != "imagegate":
            continue
        limit, peer = _find(runs, run, "limit"), _find(runs, run, "litellm")
        ratios: dict[str, float] = {}
        uv = _find(runs, run, "limit-uvloop")
        if uv is not None and uv.rps:
            ratios["rps_vs_limit_uvloop"] = round(run.rps / uv.rps, 3)
        if limit is not None and limit.rps:
            ratios["rps_vs_limit"] = round(run.rps / limit.rps, 3)
            ratios["p99_vs_limit"] = round(run.p99_ms / limit.p99_ms, 3) if limit.p99_ms else 0
        if peer is not None and peer.rps and run.scenario in ("1", "2", "5", "6"):
            ratios["rps_vs_peer"] = round(run.rps / peer.rps, 1)
            ratios["p50_vs_peer"] = round(run.p50_ms / peer.p50_ms, 3) if peer.p50_ms else 0
        run.extra["ratios"] = ratios
        label = f"{run.case}, w{run.workers}, c{run.connections}"
        scenarios.setdefault(run.scenario, []).append(
            {
                "case": run.case,
                "workers": run.workers,
                "connections": run.connections,
                "imagegate": {"rps": run.rps, "p50_ms": run.p50_ms, "p99_ms": run.p99_ms},
                "limit": None if limit is None else {"rps": limit.rps, "p99_ms": limit.p99_ms},
                "litellm": None if peer is None else {"rps": peer.rps, "p50_ms": peer.p50_ms},
                "ratios": ratios,
            }
        )
        is_hit = run.scenario in ("1", "2")
        if is_hit and "rps_vs_limit" in ratios:
            v = ratios["rps_vs_limit"]
            targets.append(_target("hit req/s >= 0.8 x limit", label, v, ">= 0.80", v >= 0.8))
            p = ratios["p99_vs_limit"]
            targets.append(_target("hit p99 <= 2 x limit", label, p, "<= 2.00", p <= 2.0))
        if run.scenario in ("1", "6") and "rps_vs_peer" in ratios:
            v = ratios["rps_vs_peer"]
            targets.append(_target("hit req/s >= 50 x LiteLLM", label, v, ">= 50", v >= 50))
        if "large" in run.case and is_hit and run.rss_peak_mb is not None:
            v = run.rss_peak_mb
            targets.append(
                _target("peak RSS per worker, 1.5 MB images", label, v, "< 300 MB", v < 300)
            )
        if run.scenario == "3":
            direct = next(
                (r for r in runs if r.target == "upstream" and r.connections == run.connections),
                None,
            )
            if direct is not None:
                over = run.p50_ms - direct.p50_ms
                run.extra["overhead_p50_ms"] = round(over, 2)
                run.extra["overhead_p99_ms"] = round(run.p99_ms - direct.p99_ms, 2)
                if peer is not None:
                    peer.extra["overhead_p50_ms"] = round(peer.p50_ms - direct.p50_ms, 2)
                if run.connections == 1:
                    targets.append(
                        _target("miss overhead p50 <= 5 ms", label, over, "<= 5 ms", over <= 5)
                    )
                else:
                    targets.append(
                        _target("miss overhead p50 (informative)", label, over, "-", None)
                    )
        if run.scenario in ("4", "6") and run.upstream_calls is not None and "misses" in run.case:
            calls = run.upstream_calls
            targets.append(_target("coalescing: upstream calls", label, calls, "== 1", calls == 1))
    big = [r for r in runs if r.scenario == "5" and r.target == "imagegate"]
    for conns in sorted({r.connections for r in big}):
        pair = sorted((r for r in big if r.connections == conns), key=lambda r: r.extra["entries"])
        if len(pair) == 2 and pair[0].p50_ms:
            v = pair[1].p50_ms / pair[0].p50_ms
            label = (
                f"{pair[1].extra['entries']:,} vs {pair[0].extra['entries']:,} entries, c{conns}"
            )
            targets.append(
                _target("hit p50 does not grow with entries", label, v, "<= 1.25", v <= 1.25)
            )
    return scenarios, targets


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up (about 4 min)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6", help="comma-separated, e.g. 1,2")
    parser.add_argument("--out", type=Path, default=_REPO / "bench" / "results.json")
    parser.add_argument("--seconds", type=float, help="each timed run (default 10, quick 3)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="fake upstream latency")
    parser.add_argument("--entries", type=int, default=100_000, help="scenario 5's big cache")
    parser.add_argument("--no-peer", action="store_true", help="skip LiteLLM")
    parser.add_argument("--no-install", action="store_true", help="never pip install LiteLLM")
    parser.add_argument("--peer-venv", type=Path, default=None, help="LiteLLM's venv")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    parser.add_argument("--table", type=Path, help="print the Markdown table of a results file")
    return parser.parse_args(argv)


def _on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.table is not None:
        earlier = json.loads(args.table.read_text())
        runs = [Run(**r) for r in earlier["runs"]]
        _, targets = analyse(runs)
        print(render_table(runs, markdown=True))
        print()
        print(render_targets(targets, markdown=True))
        return 0
    wanted = frozenset(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not wanted <= set("123456"):
        raise SystemExit("bench: --scenarios takes numbers 1 to 6")
    cfg = BenchConfig(
        seconds=args.seconds or (3.0 if args.quick else 10.0),
        warmup=1.0 if args.quick else 2.0,
        latency_ms=args.latency_ms,
        entries_big=args.entries,
        miss_conns=(1,) if args.quick else (1, 16),
        scenarios=wanted,
    )
    wrk = _ensure_wrk()
    notes: list[str] = []
    peer = None
    if args.no_peer:
        notes.append("LiteLLM skipped: --no-peer")
    else:
        venv = args.peer_venv or default_venv()
        try:
            peer = ensure_litellm(
                venv, install=not args.no_install, log=venv.parent / "install.log"
            )
        except PeerUnavailable as exc:
            print(f"peer: SKIPPED: {exc}", flush=True)
            notes.append(f"LiteLLM skipped: {exc}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    workdir = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    harness = Harness(cfg, workdir, peer)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    command = "python bench/run.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(f"bench: {command.strip()}  (work dir {workdir})", flush=True)
    failed: BaseException | None = None
    try:
        run_all(harness)
    except BaseException as exc:  # still write what was measured, then re-raise
        failed = exc
    finally:
        harness.procs.stop_all()
    scenarios, targets = analyse(harness.runs)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command.strip(),
        "quick": bool(args.quick),
        "started": started.isoformat(timespec="seconds"),
        "seconds_total": round(time.monotonic() - t0, 1),
        "completed": failed is None,
        "machine": machine_facts(),
        "versions": versions(_REPO, wrk, peer.version if peer else None),
        "config": {
            **{k: v for k, v in vars(cfg).items() if k != "scenarios"},
            "scenarios": sorted(cfg.scenarios),
            "load_generator": "wrk -t1 (one thread), keep-alive connections",
            "limit": "bare aiohttp app returning the gateway's exact hit bytes from memory",
            **harness.extra,
        },
        "notes": notes + harness.notes,
        "runs": [r.to_json() for r in harness.runs],
        "scenarios": scenarios,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(render_table(harness.runs))
    print()
    print(render_targets(targets))
    for note in doc["notes"]:
        print(f"note: {note}")
    print(f"\nwrote {args.out} ({doc['seconds_total']:.0f}s)")
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(failed, KeyboardInterrupt):
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    if failed is not None:
        raise failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
