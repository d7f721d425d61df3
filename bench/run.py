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
    render_lag,
    render_table,
    render_targets,
    versions,
)
from bench.scenarios import BenchConfig, Harness, run_all  # noqa: E402
from bench.targets import analyse  # noqa: E402

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


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up (about 4 min)")
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6,7,8,9",
        help="comma-separated, e.g. 1,2 (7 store hits, 8 the mix, 9 shared mode)",
    )
    parser.add_argument("--out", type=Path, default=_REPO / "bench" / "results.json")
    parser.add_argument("--seconds", type=float, help="each timed run (default 10, quick 3)")
    parser.add_argument("--warmup", type=float, help="untimed run before each (default 2, quick 1)")
    parser.add_argument("--hit-conns", default=None, help="hit connections, e.g. 64 (default 1,64)")
    parser.add_argument("--no-uvloop-limit", action="store_true", help="skip limit-uvloop runs")
    parser.add_argument(
        "--gateway-loop",
        choices=("auto", "uvloop", "asyncio"),
        help="the gateway's [server] event_loop (default: the gateway's default)",
    )
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
        _, targets = analyse(runs, earlier.get("config", {}))
        print(render_table(runs, markdown=True))
        print()
        print(render_targets(targets, markdown=True))
        print()
        print(render_lag(runs, markdown=True))
        return 0
    wanted = frozenset(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not wanted <= set("123456789"):
        raise SystemExit("bench: --scenarios takes numbers 1 to 9")
    hit_conns: tuple[int, ...] = (1, 64)
    if args.hit_conns:
        hit_conns = tuple(int(c) for c in args.hit_conns.split(","))
    cfg = BenchConfig(
        seconds=args.seconds or (3.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        hit_conns=hit_conns,
        limit_uvloop=not args.no_uvloop_limit,
        gateway_loop=args.gateway_loop,
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
    load_before = os.getloadavg()
    command = "python bench/run.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:]))
    print(f"bench: {command.strip()}  (work dir {workdir})", flush=True)
    failed: BaseException | None = None
    try:
        run_all(harness)
    except BaseException as exc:  # still write what was measured, then re-raise
        failed = exc
    finally:
        harness.procs.stop_all()
    load_after = os.getloadavg()
    scenarios, targets = analyse(harness.runs, harness.extra)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command.strip(),
        "quick": bool(args.quick),
        "started": started.isoformat(timespec="seconds"),
        "seconds_total": round(time.monotonic() - t0, 1),
        "completed": failed is None,
        "machine": {
            **machine_facts(),
            "loadavg_start": [round(x, 2) for x in load_before],
            "loadavg_end": [round(x, 2) for x in load_after],
        },
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
    print()
    print(render_lag(harness.runs))
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
