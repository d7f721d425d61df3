"""What observability as events costs a hit: CacheLookedUp + RequestCompleted through the
metrics and log hooks, against the direct calls the hit path made before (issue 13).

    .venv/bin/python bench/events_micro.py [--number 100000] [--repeat 7]

In one process, no server: JSON lines at info level go to /dev/null through the batched
writer (as in production), metric children are warm. Prints the best of `--repeat` runs
(µs per hit) for the old direct calls, the events path, and its parts.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import structlog  # noqa: E402

from proxy.observability.events import (  # noqa: E402
    CacheLookedUp,
    Event,
    Events,
    Hook,
    RequestCompleted,
)
from proxy.observability.hooks import LogHook, MetricsHook  # noqa: E402
from proxy.observability.logging import configure_logging, info_line  # noqa: E402
from proxy.observability.metrics import Metrics  # noqa: E402

__all__ = ["cases", "main"]

ROUTE = "/v1/images/generations"


class _Loop:
    """The emitter before its per-kind table: every hook called, each looks the kind up."""

    def __init__(self, hooks: tuple[Hook, ...]) -> None:
        self.hooks = hooks

    def emit(self, event: Event) -> None:
        for hook in self.hooks:
            hook(event)


def _fields() -> dict[str, object]:
    """A hit's log fields, as the images route sets them (fresh per request, like there)."""
    return {"key": "sk-abcdef012", "model": "gpt-image-1", "provider": "openai", "images": 1}


def cases() -> dict[str, Callable[[], None]]:
    """Each case does one hit's worth of observability."""
    metrics, log = Metrics(), structlog.get_logger("imagegate.http")
    events = Events((MetricsHook(Metrics()), LogHook()))
    metrics_only = Events((MetricsHook(Metrics()),))
    looped = _Loop((MetricsHook(Metrics()), LogHook()))
    sampled = Events((MetricsHook(Metrics()), LogHook(sample_hits=0.1)))
    noop = Events((lambda _e: None,))

    def direct() -> None:  # what service.py and middlewares.py did before the events
        metrics.child(metrics.cache_lookups, "hit").inc()
        metrics.child(metrics.requests, ROUTE, "POST", "200").inc()
        metrics.child(metrics.request_seconds, ROUTE, "hit").observe(0.0004)
        fields: dict[str, object] = {
            "method": "POST",
            "route": ROUTE,
            "status": 200,
            "cache": "hit",
            "ms": round(0.0004 * 1000, 2),
            **_fields(),
            "request_id": "req_0123456789abcdef",
        }
        info_line(log, "http.request_completed", fields)

    def direct_metrics() -> None:
        metrics.child(metrics.cache_lookups, "hit").inc()
        metrics.child(metrics.requests, ROUTE, "POST", "200").inc()
        metrics.child(metrics.request_seconds, ROUTE, "hit").observe(0.0004)

    def emitted(target: Events | _Loop) -> Callable[[], None]:
        def run() -> None:
            target.emit(CacheLookedUp("hit"))
            target.emit(
                RequestCompleted(
                    ROUTE, "POST", 200, "hit", 0.0004, _fields(), "req_0123456789abcdef"
                )
            )

        return run

    def build_only() -> None:
        CacheLookedUp("hit")
        RequestCompleted(ROUTE, "POST", 200, "hit", 0.0004, _fields(), "req_0123456789abcdef")

    return {
        "direct calls (before)": direct,
        "events, both hooks (after)": emitted(events),
        "  generic loop, both hooks": emitted(looped),
        "  both hooks, hit lines 0.1": emitted(sampled),
        "  direct metric calls only": direct_metrics,
        "  events, metrics hook only": emitted(metrics_only),
        "  events, one no-op hook": emitted(noop),
        "  building the two events": build_only,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    sink = io.TextIOWrapper(open(os.devnull, "wb"))  # noqa: SIM115 - lives for the process
    configure_logging("info", "json", stream=sink, flush_ms=250)
    runs = cases()
    for case in runs.values():
        case()  # warm: children bound, loggers cached
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeat):  # round-robin, so a busy moment of the machine hits all cases
        for name, case in runs.items():
            timer = timeit.Timer(case, timer=time.thread_time)  # this thread's CPU: a busy machine
            best[name] = min(best[name], timer.timeit(args.number))
    for name, seconds in best.items():
        print(f"{name:32} {seconds / args.number * 1e6:6.2f} µs per hit", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
