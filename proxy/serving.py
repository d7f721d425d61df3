"""Run the gateway: one process, or `--workers N` processes sharing one port (SO_REUSEPORT).

The embedded stores are safe to share between processes: entries and blobs (diskcache) and
the ledger (SQLite, budgets reserved under its write lock). Each worker keeps its own
single-flight table and rate-limit buckets.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from multiprocessing.process import BaseProcess
from typing import Any

import structlog
from aiohttp import web

from proxy.access_state import AccessState, access_state
from proxy.app import create_app
from proxy.config import ConfigError, Settings, find_config, load_settings
from proxy.keys import GATE, SERVICE
from proxy.observability.logging import configure_logging

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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.server.host, settings.server.port, reuse_port=reuse_port or None
        )
        await site.start()
        port = _bound_port(site, settings.server.port)
        registry = app[SERVICE].router.registry
        offline = ["placeholder (offline, $0)"]
        providers = offline if registry.placeholder_only else sorted(registry.ready())
        access = await access_state(app[GATE])
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
        await runner.cleanup()


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
    """Run on uvloop when asked or, with "auto", when it is installed (measured in bench/:
    it lowers the CPU cost of every request); else on asyncio's own loop."""
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
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    procs = [
        context.Process(target=_worker, args=(config, host, port, ready), daemon=False)
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
    return _supervise(procs)


def _supervise(procs: Sequence[BaseProcess]) -> int:
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


def _worker(config: str | None, host: str, port: int, ready: Any) -> None:
    try:
        settings = settings_for(config, host, port)
    except ConfigError as exc:
        print(f"imagegate: config error: {exc}", file=sys.stderr)
        return
    logs = settings.logging
    configure_logging(logs.level, logs.format, flush_ms=logs.flush_ms)
    run_server(
        serve_forever(settings, reuse_port=True, on_ready=lambda _p: ready.put(port)),
        settings.server.event_loop,
    )
