"""The `imagegate` command: `imagegate serve [--config PATH] [--host HOST] [--port PORT]`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

import structlog
from aiohttp import web

from proxy.app import create_app
from proxy.config import ConfigError, Settings, find_config, load_settings
from proxy.observability.logging import configure_logging

__all__ = ["main"]

log = structlog.get_logger("imagegate.cli")


# Each command module exposes `register(commands)`, which adds its sub-parser and sets
# `func` (args -> exit status) as the parser default.
_COMMAND_MODULES: tuple[str, ...] = ("proxy.workflows.batch",)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (default: $IMAGEGATE_CONFIG, ./config.toml)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080; 0 picks a free one)")
    serve.set_defaults(func=run_serve)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(find_config(args.config))
    except ConfigError as exc:
        print(f"imagegate: config error: {exc}", file=sys.stderr)
        return 2
    server = settings.server
    if args.host:
        server = replace(server, host=args.host)
    if args.port is not None:
        server = replace(server, port=args.port)
    settings = replace(settings, server=server)
    configure_logging(settings.logging.level, settings.logging.format)
    try:
        asyncio.run(_serve(settings))
    except OSError as exc:
        print(
            f"imagegate: cannot listen on {server.host}:{server.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        host, port = _bound(site, settings)
        shown = f"[{host}]" if ":" in host else host
        log.info("server.started", config=settings.source, data_dir=str(settings.data_dir))
        print(f"imagegate listening; OpenAI base URL: http://{shown}:{port}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("server.stopping")
    finally:
        await runner.cleanup()


def _bound(site: web.TCPSite, settings: Settings) -> tuple[str, int]:
    server = site._server  # the asyncio server; its sockets tell the port when 0 was asked
    sockets = getattr(server, "sockets", None)
    if sockets:
        sockname = sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])
    return settings.server.host, settings.server.port


if __name__ == "__main__":
    sys.exit(main())
