"""Run the gateway: one process, or `--workers N` processes sharing one port (SO_REUSEPORT).

The embedded stores are safe to share between processes: entries and blobs (diskcache) and
the ledger (SQLite, budgets reserved under its write lock) and the rate-limit buckets (SQLite,
`proxy.stores.buckets`). Each worker keeps its own single-flight table (identical misses in
two workers meet at a file lock, `proxy.stores.flight_locks`), hot answers and memory caches.
A worker exits when its supervisor dies (even by
`kill -9`), so a restart never binds beside orphans. The workers' metrics are summed at
every scrape (prometheus-client's multiprocess mode, in `<data_dir>/metrics/<supervisor pid>`).

This module is the process shell, not logic: its lifecycle lines (`server.started`,
`auth.open`, `server.stopping`) are written once per process, like the base-URL line it
prints, and stay plain log calls (tests/test_architecture.py names it as the exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

from proxy.access_state import AccessState, access_state
from proxy.app import create_app
from proxy.app_keys import AUTH, SERVICE
from proxy.config import ConfigError, Settings, find_config, load_settings
from proxy.connection_guard import ConnectionGuard
from proxy.observability.events import Events
from proxy.observability.hooks import LogHook
from proxy.observability.logging import configure_logging
from proxy.observability.metrics import MULTIPROCESS_ENV
from proxy.stores.backend_errors import CannotStart
from proxy.stores.build import open_stores

__all__ = ["base_url_line", "run_server", "serve_forever", "serve_workers", "settings_for"]

log = structlog.get_logger("imagegate.serve")


def settings_for(config: str | None, host: str | None, port: int | None) -> Settings:
    """Raises ConfigError."""
    settings = load_settings(find_config(config))
    server = settings.server
    if host:
        server = replace(server, host=host)
    if port is not None:
        server = replace(server, port=port)
    return replace(settings, server=server)


def base_url_line(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"imagegate listening; OpenAI base URL: http://{shown}:{port}/v1"


async def serve_forever(
    settings: Settings, *, reuse_port: bool = False, on_ready: Callable[[int], None] | None = None
) -> None:
    """Raises `CannotStart` when a shared backend cannot be reached."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, stores=await open_stores(settings))
    server = settings.server
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=server.keepalive_timeout_seconds,
    )
    await runner.setup()
    assert runner.server is not None
    _freeze_startup_objects()
    guard = ConnectionGuard(  # the server's connections, not the app's requests: lines only
        runner.server,
        server.header_timeout_seconds,
        server.body_timeout_seconds,
        Events((LogHook(),)),
    )
    sweeper = asyncio.create_task(guard.run())
    try:
        site = web.TCPSite(
            runner, settings.server.host, settings.server.port, reuse_port=reuse_port or None
        )
        await site.start()
        port = _bound_port(site, settings.server.port)
        registry = app[SERVICE].router.registry
        offline = ["placeholder (offline, $0)"]
        providers = offline if registry.placeholder_only else sorted(registry.ready())
        access = await access_state(app[AUTH])
        log.info(
            "server.started",
            config=settings.source,
            data_dir=str(settings.data_dir),
            open=access.open,
            keys=f"{access.configured} from config, {access.issued} issued, "
            f"{access.revoked} revoked",
            admin_key=access.admin_key,
            providers=", ".join(providers),
        )
        _warn_access(access, f"{settings.server.host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Before the URL line, so a stop sent as soon as it is printed is a clean one.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        (on_ready or (lambda p: print(base_url_line(settings.server.host, p), flush=True)))(port)
        await stop.wait()
        log.info("server.stopping")
    finally:
        sweeper.cancel()
        await runner.cleanup()


def _freeze_startup_objects() -> None:
    """Move what start-up made (modules, the catalog, the SDKs' models: most of the heap)
    out of the garbage collector's sight: a full collection then walks only what requests
    made since. Measured in bench/ (`profile_hit.py --gc-probe`): full collections paused a
    store-hit workload's event loop for 14-39 ms each before."""
    gc.collect()
    gc.freeze()


def _warn_access(access: AccessState, where: str) -> None:
    if access.open:
        log.warning(
            "auth.open",
            detail=f"no API key was ever configured or issued: anyone who can reach {where} "
            "can generate images",
        )
    elif not access.admin_key:
        log.warning(
            "auth.no_admin_key",
            detail="API keys exist but no admin key is configured: image routes need a key, "
            "and /admin/... and /dashboard are closed until the gateway starts with "
            "IMAGEGATE_ADMIN_KEY set ([auth] admin_key)",
        )


def run_server(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run on uvloop when asked or, with "auto", when it is installed; else (the default) on
    asyncio's own loop, whose tail latency under load is far lower (bench/, round two)."""
    if event_loop != "asyncio":  # the config refuses "uvloop" where it is not installed
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _bound_port(site: web.TCPSite, asked: int) -> int:
    sockets = getattr(site._server, "sockets", None)  # tells the port when 0 was asked
    return int(sockets[0].getsockname()[1]) if sockets else asked


def serve_workers(settings: Settings, workers: int, config: str | None) -> int:
    """Start `workers` processes on one port; print the base URL once all accept requests."""
    host = settings.server.host
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, settings.server.port))  # reserves the port (port 0: picks one)
    port = holder.getsockname()[1]
    metrics_dir = _fresh_metrics_dir(settings.data_dir)
    os.environ[MULTIPROCESS_ENV] = str(metrics_dir)  # the spawned workers read it at import
    try:
        return _run_workers(holder, host, port, workers, config, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """`<data_dir>/metrics/<this pid>`, empty; the folders of supervisors no longer running
    are removed (another gateway on the same data directory keeps its own)."""
    base = data_dir.resolve() / "metrics"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        if not (old.name.isdigit() and _alive(int(old.name))) or old.name == str(os.getpid()):
            shutil.rmtree(old, ignore_errors=True)
    mine = base / str(os.getpid())
    mine.mkdir()
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_workers(
    holder: socket.socket, host: str, port: int, workers: int, config: str | None, metrics: Path
) -> int:
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    procs = [
        context.Process(target=_worker, args=(config, host, port, ready, os.getpid()), daemon=False)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
    except Exception:
        print("imagegate: a worker did not start; see its log above", file=sys.stderr)
        _stop(procs)
        return 1
    finally:
        holder.close()
    print(base_url_line(host, port), flush=True)
    return _supervise(procs, metrics)


def _supervise(procs: Sequence[BaseProcess], metrics: Path) -> int:
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive():
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(p.is_alive() for p in procs):
        for proc in procs:
            proc.join(timeout=0.5)
            if not proc.is_alive() and proc.pid is not None:
                mark_process_dead(proc.pid, str(metrics))  # type: ignore[no-untyped-call]
            if not proc.is_alive() and not stopping:
                print(
                    f"imagegate: worker {proc.pid} exited ({proc.exitcode}); stopping",
                    file=sys.stderr,
                )
                stopping = True
                _stop(procs)
    return 0 if all(p.exitcode in (0, -signal.SIGTERM) for p in procs) else 1


def _stop(procs: Sequence[BaseProcess]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=20)


def _worker(config: str | None, host: str, port: int, ready: Any, parent: int) -> None:
    _exit_with_parent(parent)
    _pin_metrics_pid()
    try:
        settings = settings_for(config, host, port)
    except ConfigError as exc:
        print(f"imagegate: config error: {exc}", file=sys.stderr)
        return
    logs = settings.logging
    configure_logging(logs.level, logs.format, flush_ms=logs.flush_ms)
    try:
        run_server(
            serve_forever(settings, reuse_port=True, on_ready=lambda _p: ready.put(port)),
            settings.server.event_loop,
        )
    except CannotStart as exc:
        print(f"imagegate: {exc}", file=sys.stderr)


def _exit_with_parent(parent: int) -> None:
    """Stop (as on SIGTERM: requests in flight finish) when the supervisor is gone: the kernel
    says so on Linux (PR_SET_PDEATHSIG); everywhere, a thread sees the parent pid change."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the thread is enough
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pin_metrics_pid() -> None:
    """prometheus-client's multiprocess values call os.getpid() on every update, to notice a
    fork; a worker never forks, so they get its pid once (measured: ~1 µs less per hit)."""
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]
