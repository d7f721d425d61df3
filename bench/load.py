"""Load: `wrk` (C, event-driven; a Lua script sets POST bodies and prints a JSON summary),
and a small aiohttp burst client for "N identical requests at once" (scenario 4).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

__all__ = [
    "BurstResult",
    "LoadResult",
    "burst",
    "lua_script",
    "parse_wrk",
    "percentile",
    "run_wrk",
    "wrk_path",
]

_MARK = "BENCH_JSON "

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One timed load run. Latencies in milliseconds."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int
    mb_per_s: float
    connections: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lua_str(text: str) -> str:
    """A double-quoted Lua string literal that holds `text` (UTF-8) verbatim."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def lua_script(
    *,
    method: str = "GET",
    bodies: Sequence[str] = (),
    unique_body: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """A wrk script: one fixed body, `bodies` in rotation, or a body made unique per request.

    `unique_body=(prefix, suffix)` sends `prefix .. <thread>-<counter> .. suffix`.
    """
    lines = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_str(name)}] = {_lua_str(value)}")
    if unique_body is not None:
        prefix, suffix = unique_body
        lines += [
            "local counter = 0",
            "local tid = tostring(math.random(1, 1000000000))",
            "request = function()",
            "  counter = counter + 1",
            f"  local body = {_lua_str(prefix)} .. tid .. '-' .. counter .. {_lua_str(suffix)}",
            "  return wrk.format(nil, nil, nil, body)",
            "end",
        ]
    elif len(bodies) == 1:
        lines.append(f"wrk.body = {_lua_str(bodies[0])}")
    elif bodies:
        lines.append("local bodies = {")
        lines += [f"  {_lua_str(body)}," for body in bodies]
        lines += [
            "}",
            "local i = 0",
            "request = function()",
            "  i = i % #bodies + 1",
            "  return wrk.format(nil, nil, nil, bodies[i])",
            "end",
        ]
    lines.append(_DONE)
    return "\n".join(lines)


def parse_wrk(output: str, connections: int) -> LoadResult:
    """The `BENCH_JSON` line the script's `done` prints -> a LoadResult."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            break
    else:
        raise ValueError(f"wrk printed no summary:\n{output[-2000:]}")
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = sum(raw["errors"].values())
    return LoadResult(
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        mean_ms=round(lat["mean"] / 1000, 3),
        errors=errors,
        mb_per_s=round(raw["bytes"] / seconds / 1e6, 1) if seconds else 0.0,
        connections=connections,
    )


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    script: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Run wrk against `url` for `seconds` (bounded: wrk stops itself; we kill it after 3x)."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    try:
        argv = [
            wrk,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s:g}s",
            "-s",
            str(path),
            url,
        ]
        done = subprocess.run(  # noqa: S603 - wrk from PATH, our own arguments
            argv, capture_output=True, text=True, timeout=seconds * 3 + 30, check=False
        )
    finally:
        path.unlink(missing_ok=True)
    return parse_wrk(done.stdout + done.stderr, connections)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of `values`; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class BurstResult:
    """N identical requests sent at once. Latencies in milliseconds."""

    sent: int
    ok: int
    statuses: Counter[int] = field(default_factory=Counter)
    x_cache: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    wall_ms: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "sent": self.sent,
            "ok": self.ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "x_cache": dict(sorted(self.x_cache.items())),
            "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else 0.0,
            "wall_ms": round(self.wall_ms, 2),
            "errors": self.errors[:5],
        }


async def burst(url: str, body: bytes, count: int, *, timeout_s: float = 120.0) -> BurstResult:
    """Open `count` connections and send the same POST on all of them at once."""
    result = BurstResult(sent=count, ok=0)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    start_gate = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        await start_gate.wait()
        t0 = time.perf_counter()
        try:
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                await resp.read()
                result.statuses[resp.status] += 1
                result.x_cache[resp.headers.get("X-Cache", "-")] += 1
                if resp.status == 200:
                    result.ok += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
            return
        result.latencies_ms.append((time.perf_counter() - t0) * 1000)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        start_gate.set()
        await asyncio.gather(*tasks)
        result.wall_ms = (time.perf_counter() - t0) * 1000
    return result
