"""The `imagegate` command: `imagegate serve [--config PATH] [--host HOST] [--port PORT]`,
`imagegate migrate --from OLD.toml --to NEW.toml`, and the client commands that register
themselves below."""
# The server shell is imported inside `run_serve` and `run_migrate`: the client commands
# (batch, keys, ab, report) are clients of a gateway and start without loading it.

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from proxy.workflows import ab, batch, keys_command, report

__all__ = ["build_parser", "main"]


# Each client command exposes `register(commands)`, which adds its sub-parser and sets
# `func` (args -> exit status) as the parser default.
_CLIENT_COMMANDS = (batch.register, keys_command.register, ab.register, report.register)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


def build_parser() -> argparse.ArgumentParser:
    """`imagegate` and every sub-command, each with `func` (args -> exit status) set."""
    parser = argparse.ArgumentParser(prog="imagegate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (default: $IMAGEGATE_CONFIG, ./config.toml)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080; 0 picks a free one)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving one port, sharing the stores (default 1)",
    )
    serve.set_defaults(func=run_serve)
    _add_migrate(commands)
    for register in _CLIENT_COMMANDS:
        register(commands)
    return parser


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy the cache, keys, ledger and experiments to another configuration's stores",
        description=(
            "Copy blobs, cache entries, API keys, ledger rows, circuit holds and A/B "
            "experiments from the stores of --from to those of --to (embedded or shared), "
            "each read from its own file ($IMAGEGATE_DATA_DIR does not apply). Copies only "
            "what is missing: run it again to resume or to catch up."
        ),
        epilog=(
            "exit status: 0 done, 1 refused or failed (the message says what to do), "
            "2 usage error, 130 interrupted (run it again to resume)"
        ),
    )
    migrate.add_argument("--from", dest="from_path", required=True, metavar="OLD.toml")
    migrate.add_argument("--to", dest="to_path", required=True, metavar="NEW.toml")
    migrate.add_argument(
        "--dry-run", action="store_true", help="count what would be copied; write nothing"
    )
    migrate.add_argument(
        "--force",
        action="store_true",
        help="copy although budget reservations are open in the source (they stay behind)",
    )
    migrate.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from proxy.migration.command import run_migrate as migrate

    return migrate(args)


def run_serve(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError
    from proxy.observability.logging import configure_logging
    from proxy.serving import run_server, serve_forever, serve_workers, settings_for
    from proxy.stores.backend_errors import CannotStart

    try:
        settings = settings_for(args.config, args.host, args.port)
    except ConfigError as exc:
        print(f"imagegate: config error: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("imagegate: --workers must be at least 1", file=sys.stderr)
        return 2
    logs = settings.logging
    configure_logging(logs.level, logs.format, flush_ms=logs.flush_ms)
    server = settings.server
    try:
        if args.workers > 1:
            return serve_workers(settings, args.workers, args.config)
        run_server(serve_forever(settings), settings.server.event_loop)
    except CannotStart as exc:  # a shared backend: one line, no traceback
        print(f"imagegate: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                "; another process is listening there (an imagegate started earlier?): stop "
                "it, or start this one with --port PORT (0 picks a free port)"
            )
        print(
            f"imagegate: cannot listen on {server.host}:{server.port}: {exc.strerror}{hint}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
