"""Where a request's time goes: py-spy samples imagegate while wrk loads one case.

    .venv/bin/python bench/profile_hit.py [--case b64-small|b64-large|url-small|blob-large|miss|
                                                 store-small|store-large]
                                         [--seconds 15] [--connections 64] [--out DIR]
                                         [--entries 100000]

Starts the fake upstream and imagegate (1 worker) like `bench/run.py`, primes the hit
entries, then records the gateway with `py-spy record --format raw` while wrk runs. Prints
the top functions by inclusive and by self samples (line numbers folded) and keeps the raw
stacks in `--out` (a flame graph tool reads them). The `store-*` cases fill a data dir with
`--entries` entries (as scenario 7 does) and run the gateway with `[cache] memory_mb = 0`,
so every hit goes through the stores. Every case prints the event-loop lag during the run.
py-spy comes from PATH, or is installed once into ~/.cache/imagegate-bench/tools.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.gateway import MODEL  # noqa: E402
from bench.load import LoadResult, lua_script, run_wrk  # noqa: E402
from bench.loop_lag import lag_between, scrape_lag  # noqa: E402
from bench.peer import default_venv  # noqa: E402
from bench.scenarios import GEN, JSON, BenchConfig, Harness  # noqa: E402
from bench.store_hits import fill_store, rotation  # noqa: E402

__all__ = ["attribute", "main", "summarize"]

_LINE = re.compile(r":\d+\)")


def _py_spy() -> str:
    found = shutil.which("py-spy")
    if found:
        return found
    tools = default_venv().parent / "tools"
    binary = tools / "bin" / "py-spy"
    if not binary.exists():
        print(f"installing py-spy into {tools}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - PyPI's py-spy, by name
            [str(tools / "bin" / "pip"), "install", "-q", "py-spy"], check=True
        )
    return str(binary)


def summarize(raw: str, top: int = 30) -> dict[str, list[tuple[str, float]]]:
    """py-spy raw (collapsed) stacks -> top functions, as % of all samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"inclusive": [], "self": []}

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    candidates = Counter(
        {f: n for f, n in inclusive.items() if any(w in f.lower() for w in STALL_WORDS)}
    )
    return {
        "inclusive": pct(inclusive),
        "self": pct(own),
        "stall_candidates": pct(candidates),
        "samples": [("total", float(total))],
    }


# Frames that may hold the loop (or the GIL) apart from serving a request: the ledger's
# hit rows and sqlite commits and checkpoints, log writes, big blob reads.
STALL_WORDS = ("hit_rows", "hitrows", "tally", "sqlite", "commit", "checkpoint", "log",
               "blobstore.get", "cache.get", "flush", "write", "read")  # fmt: skip


def _gc_env(log: Path) -> dict[str, str]:
    probe = str(Path(__file__).resolve().parent / "stall_probe")
    path = os.pathsep.join(p for p in (probe, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BENCH_GC_LOG": str(log)}


# What a sample's time is spent on: the first (pattern, part) whose pattern is in any frame of
# the stack; the generic ones after them name the deepest frame of the gateway or aiohttp.
PARTS = (
    ("_writelines", "sending the response (socket write)"),
    ("_SelectorSocketTransport.write", "sending the response (socket write)"),
    ("b64encode", "base64 of the image"),
    ("DiskBlobStore", "blob read (diskcache row, file, signature)"),
    ("get_base64", "blob read (diskcache row, file, signature)"),  # its kept base64
    ("disk_base64.py", "blob read (diskcache row, file, signature)"),
    ("DiskEntryStore", "entry lookup (sqlite rows, JSON)"),
    ("request_key", "request key (canonical JSON, sha256)"),
    ("parse_generation", "normalization"),
    ("policies/normalize.py", "normalization"),  # where py-spy lost the caller's frames
    ("plan_lookup", "entry lookup (sqlite rows, JSON)"),
    ("read_json", "request body read, JSON parse"),
    ("images_body", "response JSON"),
    ("logging.py", "log line"),
    ("request_lines.py", "log line"),
    ("_record", "ledger (hit rows, tally)"),
    ("ledger_row", "ledger (hit rows, tally)"),
    ("HitTally", "ledger (hit rows, tally)"),
    ("flush_hits", "ledger (hit rows, tally)"),
    ("hit_rows", "ledger (hit rows, tally)"),
    ("ImageService.record", "ledger (hit rows, tally)"),
    ("Accounts.", "ledger (hit rows, tally)"),
    # (not asyncio's base_events.py, the root of every stack on asyncio's loop)
    ("observability/metrics.py", "metrics and event hooks"),
    ("observability/plain_metrics.py", "metrics and event hooks"),
    ("observability/hooks.py", "metrics and event hooks"),
    ("observability/events.py", "metrics and event hooks"),
    ("access.py", "authentication, rate limits"),
    ("authentication.py", "authentication, rate limits"),
    ("admission.py", "authentication, rate limits"),
)
GENERIC = (
    # The process's own start frames: what runs under them but outside any request's code
    # is the event loop itself (asyncio's selector loop is Python, so it shows up here).
    ("proxy/serving.py", "event loop, other threads, interpreter"),
    ("proxy/cli.py", "event loop, other threads, interpreter"),
    ("proxy/", "other gateway code (middleware, handler, headers)"),
    ("policies/", "other gateway code (middleware, handler, headers)"),
    ("aiohttp", "aiohttp (HTTP parsing, dispatch, response headers)"),
)


def attribute(raw: str) -> list[tuple[str, float]]:
    """py-spy raw stacks -> % of samples per part of the request (parts do not overlap)."""
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        total += int(count_text)
        part = next((n for p, n in PARTS if any(p in f for f in frames)), None)
        for frame in reversed(frames):
            if part is not None:
                break
            part = next((n for p, n in GENERIC if p in frame), None)
        parts[part or "event loop, other threads, interpreter"] += int(count_text)
    return [(name, round(100 * n / total, 1)) for name, n in parts.most_common()] if total else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--case",
        default="b64-small",
        choices=[
            "b64-small",
            "b64-large",
            "url-small",
            "blob-small",
            "blob-large",
            "miss",
            "store-small",
            "store-large",
        ],
    )
    parser.add_argument("--entries", type=int, default=100_000, help="store-* cases' entries")
    parser.add_argument(
        "--gc-probe",
        action="store_true",
        help="time every garbage collection in the gateway (bench/stall_probe/sitecustomize.py)",
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread; default: only the thread holding the GIL (py-spy --gil), "
        "i.e. where the CPU-bound Python work of the process goes",
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="also sample threads that wait (py-spy --idle; implies --all-threads): wall "
        "time, e.g. where a miss waits on fsync",
    )
    args = parser.parse_args(argv)
    py_spy = _py_spy()
    workdir = Path(tempfile.mkdtemp(prefix="imagegate-profile-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    h = Harness(BenchConfig(entries_big=args.entries), workdir, None)
    lag0 = None
    try:
        h.start_upstream()
        env = _gc_env(out / f"gc-{args.case}.json") if args.gc_probe else None
        if args.case.startswith("store-"):
            data = fill_store(h)
            gw = h.start_gateway("imagegate", data, 1, memory_mb=0, env=env)
            bodies = rotation(args.entries, args.case.removeprefix("store-"))
            script = lua_script(method="POST", bodies=bodies, headers=JSON)
            path = GEN
        else:
            gw = h.start_gateway("imagegate", workdir / "data", 1, env=env)
            h.prime_gateway(gw)
        if args.case.startswith("store-"):
            pass  # script and path set above
        elif args.case == "miss":
            prefix = json.dumps({"model": MODEL, "prompt": "profile miss "})[:-2]
            script = lua_script(
                method="POST",
                unique_body=(prefix, '", "size": "1024x1024", "quality": "low"}'),
                headers=JSON,
            )
            path = GEN
        elif args.case.startswith("blob"):
            script, path = lua_script(method="GET"), gw.gets[args.case]
        else:
            path, body = gw.posts[args.case]
            script = lua_script(method="POST", bodies=[body], headers=JSON)
        run_wrk(gw.url(path), script, connections=args.connections, seconds=2)  # warm-up
        lag0 = scrape_lag(gw.url(""))
        window = (time.time(), 0.0)
        raw_path = out / f"pyspy-{args.case}.txt"
        result: list[LoadResult] = []
        load = threading.Thread(
            target=lambda: result.append(
                run_wrk(gw.url(path), script, connections=args.connections, seconds=args.seconds)
            )
        )
        load.start()
        subprocess.run(  # noqa: S603 - py-spy on our own child
            [
                py_spy,
                "record",
                "-p",
                str(gw.pids[0]),
                "-d",
                str(max(1, int(args.seconds) - 1)),
                "-r",
                str(args.rate),
                "-f",
                "raw",
                "-o",
                str(raw_path),
                "--nonblocking",
                *(["--idle"] if args.idle else [] if args.all_threads else ["--gil"]),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load.join()
        lag = lag_between(lag0, scrape_lag(gw.url("")))
        window = (window[0], time.time())
    finally:
        h.procs.stop_all()
        for data_dir in ("data", "data-store"):  # keep only logs and stacks
            shutil.rmtree(workdir / data_dir, ignore_errors=True)
    summary = summarize(raw_path.read_text())
    summary["parts"] = attribute(raw_path.read_text())
    res = result[0] if result else None
    if res is not None:
        print(
            f"{args.case}, c{args.connections}: {res.rps:,.0f} req/s, p50 {res.p50_ms} ms, "
            f"p99 {res.p99_ms} ms (under py-spy)"
        )
    print(f"event-loop lag during the run (from /metrics): {lag}")
    for kind in ("inclusive", "self", "stall_candidates", "parts"):
        print(f"\ntop by {kind} samples (% of all samples):")
        for name, pct in summary[kind]:
            print(f"  {pct:5.1f}%  {name}")
    summary["loop_lag"] = lag  # type: ignore[assignment]
    gc_log = out / f"gc-{args.case}.json"
    if gc_log.exists():
        gc_stats = json.loads(gc_log.read_text())
        during = [p for p in gc_stats["pauses"] if window[0] <= p[0] <= window[1]]
        summary["gc"] = {**gc_stats, "pauses_during_run": during}  # type: ignore[assignment]
        print(f"\ngarbage collections over the gateway's life: {gc_stats['by_generation']}")
        print(f"GC pauses >= 5 ms during the profiled run (unix time, generation, ms): {during}")
    (out / f"pyspy-{args.case}.json").write_text(json.dumps(summary, indent=2))
    print(f"\nraw stacks: {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
