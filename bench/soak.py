"""Soak: minutes of mixed load on one gateway; do memory, file descriptors and connections
stay flat, and does the disk stay within `[cache] max_bytes`?

    python -m bench.soak --minutes 30            # the documented run (outside CI)
    python -m bench.soak --minutes 3 --workers 2 # a quick check

It starts a load driver (`python -m bench.soak_load`, a second process: a fake OpenAI
upstream on loopback and openai SDK clients, bounded in time and count, stopping by itself),
then `imagegate serve` with a small `max_bytes` in front of that upstream. Every
`--interval` seconds it samples the gateway's process tree: RSS, open fds, TCP connections
(established, from /proc/net/tcp*), and the data dir's size. It writes every sample and the
verdict to `--out` (JSON) and prints the verdict: a series is "growing" when the mean of its
last third exceeds the mean of its middle third by both a relative and an absolute margin
(the first third is warm-up: caches and pools filling).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import child_env
from bench.procs import Procs, free_port, tree_pids, wait_http

__all__ = ["MARGINS", "judge", "main", "sample", "write_config"]

SECRET = "sk-soak-0123456789abcdef"  # noqa: S105  # a loopback-only test key
# series -> (relative, absolute) growth of the last third over the middle third that fails
MARGINS: dict[str, tuple[float, float]] = {
    "rss_bytes": (0.10, 8 * 2**20),
    "fds": (0.10, 8),
    "connections": (0.25, 8),
}


def write_config(path: Path, *, port: int, upstream: str, max_bytes: int, memory_mb: int) -> Path:
    data = path.parent / "data"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f"[storage]\ndata_dir = {json.dumps(str(data))}\n"
        f"[cache]\nmax_bytes = {max_bytes}\nmemory_mb = {memory_mb}\n"
        '[logging]\nlevel = "warning"\n'
        f'[providers.openai]\napi_key = "sk-test"\nbase_url = {json.dumps(upstream)}\n'
        '[models."dall-e-2"]\nretired = false\n'  # served as itself: 256x256 images
        f'[[keys]]\nname = "soak"\nkey = "{SECRET}"\nbudget_usd = 1000000.0\n'
    )
    return path


# -- sampling ------------------------------------------------------------------------------


def _socket_inodes(pid: int) -> tuple[int, set[str]]:
    """(open fds, inodes of the socket fds) of one process; (0, {}) when it is gone."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, set()
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return len(names), inodes


def _established(inodes: set[str]) -> int:
    """How many of `inodes` are TCP connections in state ESTABLISHED."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _dir_bytes(directory: Path, *, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(skip):
                continue
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue  # evicted meanwhile
    return total


def sample(root_pid: int, data: Path, started: float) -> dict[str, Any]:
    pids = tree_pids(root_pid)
    fds, inodes = 0, set()
    for pid in pids:
        count, found = _socket_inodes(pid)
        fds += count
        inodes |= found
    return {
        "t": round(time.monotonic() - started, 1),
        "processes": len(pids),
        "rss_bytes": sum(_rss(pid) for pid in pids),
        "fds": fds,
        "connections": _established(inodes),
        "data_bytes": _dir_bytes(data),
        # what max_bytes bounds: blob files plus their index (the WAL is not counted by it)
        "blobs_bytes": _dir_bytes(data / "blobs", skip=("-wal", "-shm")),
        "blobs_wal_bytes": _dir_bytes(data / "blobs") - _dir_bytes(data / "blobs", skip=("-wal",)),
    }


# -- verdict -------------------------------------------------------------------------------


def judge(
    samples: list[dict[str, Any]], max_bytes: int, in_flight: int, final: dict[str, int]
) -> dict[str, Any]:
    """Per series: middle and last third means and "flat" | "growing". Disk: "within" when
    the blob store after the stop (`final`, see `_stored`) is within `max_bytes` and no
    sample exceeded it by more than `in_flight` bytes (each put is written before the
    eviction it causes, so concurrent puts overshoot for a moment); else "over"."""
    verdict: dict[str, Any] = {}
    third = len(samples) // 3
    for name, (rel, absolute) in MARGINS.items():
        if third < 2:
            verdict[name] = {"verdict": "too few samples"}
            continue
        middle = statistics.fmean(s[name] for s in samples[third : 2 * third])
        last = statistics.fmean(s[name] for s in samples[2 * third :])
        growing = last > middle * (1 + rel) and last - middle > absolute
        verdict[name] = {
            "middle_mean": round(middle, 1),
            "last_mean": round(last, 1),
            "first": samples[0][name],
            "max": max(s[name] for s in samples),
            "verdict": "growing" if growing else "flat",
        }
    peak = max((s["blobs_bytes"] for s in samples), default=0)
    verdict["disk"] = {
        "max_bytes": max_bytes,
        "blobs_bytes_peak": peak,
        "data_bytes_last": samples[-1]["data_bytes"] if samples else 0,
        "overshoot_allowed": in_flight,
        **final,
        "verdict": "within"
        if peak <= max_bytes + in_flight and final["blobs_bytes_final"] <= max_bytes
        else "over",
    }
    return verdict


# -- the run -------------------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-mb", type=float, default=8.0, help="[cache] max_bytes, in MiB")
    parser.add_argument("--memory-mb", type=int, default=16, help="[cache] memory_mb")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rng", type=int, default=1, help="makes the request mix repeatable")
    parser.add_argument("--out", type=Path, default=Path("bench/soak-results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    work = Path(tempfile.mkdtemp(prefix="imagegate-soak-"))
    procs = Procs(work)
    seconds = args.minutes * 60
    max_bytes = int(args.max_mb * 2**20)
    try:
        upstream_file, summary_file = work / "upstream", work / "load.json"
        port = free_port()
        driver = procs.start(
            "load",
            [
                *(sys.executable, "-m", "bench.soak_load", "--gateway", f"http://127.0.0.1:{port}"),
                *("--upstream-file", str(upstream_file), "--summary", str(summary_file)),
                *("--seconds", str(seconds), "--rate", str(args.rate), "--rng", str(args.rng)),
                *("--concurrency", str(args.concurrency), "--key", SECRET),
                *("--max-requests", str(int(seconds * args.rate * 1.1) + 10)),
            ],
            env=child_env({"PYTHONPATH": os.getcwd()}),
        )
        while not upstream_file.exists():
            if not driver.alive():
                raise RuntimeError(f"the load driver exited: {driver.tail()}")
            time.sleep(0.1)
        config = write_config(
            work / "gateway.toml",
            port=port,
            upstream=upstream_file.read_text().strip(),
            max_bytes=max_bytes,
            memory_mb=args.memory_mb,
        )
        argv_ = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
        gateway = procs.start(
            "imagegate", [*argv_, "--workers", str(args.workers)], env=child_env()
        )
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=90, child=gateway)
        samples = _sample_until_done(gateway.pid, work / "data", driver, args.interval, seconds)
        driver.proc.wait(timeout=60)
        load = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    finally:
        procs.stop_all()
    in_flight = args.concurrency * 3 * int(load.get("largest_image", 0))  # n is 1..3
    verdict = judge(samples, max_bytes, in_flight, _stored(work / "data"))
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "load": load}
    result |= {"verdict": verdict, "samples": samples, "work_dir": str(work)}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    _print(verdict, load, len(samples), args.out)
    failed = [k for k, v in verdict.items() if v.get("verdict") in ("growing", "over")]
    return 1 if failed or load.get("bad_images", 0) or not load.get("ok", 0) else 0


def _count(path: Path, table: str) -> int:
    db = sqlite3.connect(path)
    count = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
    db.close()
    return count


def _stored(data: Path) -> dict[str, int]:
    """After the stop: the blob store's size as `max_bytes` counts it (files + index), its
    rows and files (and files no row names: leaked disk), and what max_bytes does not
    bound: entries (kept after their blob is evicted) and the ledger's rows."""
    blobs = data / "blobs"
    db = sqlite3.connect(blobs / "cache.db")
    named = {row[0] for row in db.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL")}
    db.close()
    files = {str(p.relative_to(blobs)) for p in blobs.glob("*/*/*") if p.is_file()}
    return {
        "blobs_bytes_final": _dir_bytes(blobs, skip=("-wal", "-shm")),
        "blob_rows": len(named),
        "blob_files": len(files),
        "files_not_indexed": len(files - named),
        "entries": _count(data / "entries" / "cache.db", "Cache"),
        "entries_bytes": _dir_bytes(data / "entries"),
        "ledger_rows": _count(data / "ledger.sqlite3", "ledger"),
        "ledger_bytes": _dir_bytes(data, skip=())
        - _dir_bytes(data / "blobs")
        - _dir_bytes(data / "entries"),  # the ledger and the other small sqlite files
    }


def _sample_until_done(
    root: int, data: Path, driver: Any, interval: float, seconds: float
) -> list[dict[str, Any]]:
    started = time.monotonic()
    samples = []
    while driver.alive() and time.monotonic() - started < seconds + 30:
        samples.append(sample(root, data, started))
        time.sleep(interval)
    return samples


def _print(verdict: dict[str, Any], load: dict[str, Any], count: int, out: Path) -> None:
    print(f"load: {json.dumps(load)}")
    print(f"{count} samples -> {out}")
    for name, v in verdict.items():
        print(f"  {name:12} {v.pop('verdict'):8} {json.dumps(v)}")


if __name__ == "__main__":
    sys.exit(main())
