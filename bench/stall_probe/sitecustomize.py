"""A measuring probe for `bench/profile_hit.py --gc-probe`, never imported by the gateway on
its own: the bench puts this directory on the gateway child's PYTHONPATH, and Python imports
`sitecustomize` at start-up. When `BENCH_GC_LOG` names a file, every garbage collection is
timed (`gc.callbacks`) and a summary per generation is written there (JSON): how many, total
and largest pause, and how many paused the process for 5 ms or more. That is the GC's share
of the event-loop stalls, measured rather than assumed."""

from __future__ import annotations

import atexit
import gc
import json
import os
import time

_PATH = os.environ.get("BENCH_GC_LOG")


def _install(path: str) -> None:
    stats = {g: {"count": 0, "total_ms": 0.0, "max_ms": 0.0, "over_5ms": 0, "over_20ms": 0}
             for g in (0, 1, 2)}  # fmt: skip
    started = [0.0]
    pauses: list[tuple[float, int, float]] = []  # (unix time, generation, ms) of >= 5 ms

    def dump() -> None:
        with open(path, "w") as handle:
            json.dump({"by_generation": {str(g): s for g, s in stats.items()},
                       "pauses": pauses[-2000:]}, handle)  # fmt: skip

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        s = stats[info.get("generation", 0)]
        s["count"] += 1
        s["total_ms"] += ms
        s["max_ms"] = max(s["max_ms"], ms)
        s["over_5ms"] += ms >= 5
        s["over_20ms"] += ms >= 20
        if ms >= 5:
            pauses.append((time.time(), info.get("generation", 0), round(ms, 2)))
        if info.get("generation") == 2 or s["count"] % 500 == 0:
            dump()

    gc.callbacks.append(callback)
    atexit.register(dump)


if _PATH:
    _install(_PATH)
