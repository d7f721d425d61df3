"""`imagegate migrate --from OLD.toml --to NEW.toml [--dry-run] [--force]`.

Each side's stores come from its own file (`$IMAGEGATE_DATA_DIR` does not apply: it would
point both sides at one directory). Progress goes to stderr, as bars on a terminal and as
one line per batch otherwise (a Kubernetes Job's log); the summary table to stdout.
Exit status: 0 done, 1 refused or failed (one line says what to do), 2 usage error, 130
interrupted (Ctrl-C: what was copied stays, a re-run resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars
from rich.table import Table

from proxy.config import ConfigError, Settings, load_settings
from proxy.migration.copying import STEPS, MigrationRefused, Run, check_run, copy_stores
from proxy.migration.ports import TransferFailed
from proxy.migration.records import Loaded
from proxy.stores.backend_errors import BackendUnavailable
from proxy.stores.transfer_opening import OPEN_ERRORS, open_transfer_stores

__all__ = ["run_migrate"]

# What stops a run with one line (what was copied is kept).
_STOPS: tuple[type[Exception], ...] = (*OPEN_ERRORS, TransferFailed, BackendUnavailable)

_LABELS: Final = {
    "blobs": "blobs (images)",
    "entries": "cache entries",
    "keys": "API keys",
    "ledger": "ledger rows",
    "holds": "circuit holds",
    "experiments": "A/B experiments",
    "events": "A/B impressions, conversions",
}


def run_migrate(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    try:
        source = _settings(args.from_path, "--from")
        target = _settings(args.to_path, "--to")
        if source.storage.backend == "embedded" and not source.data_dir.is_dir():
            raise MigrationRefused(
                f"--from {args.from_path}: its data directory {source.data_dir} does not exist "
                "(relative paths are from the current directory): run migrate from the "
                "directory the gateway ran in, or set [storage] data_dir"
            )
        run = Run(write=not args.dry_run, force=args.force)
        done, left = asyncio.run(_migrate(source, target, run, err))
    except MigrationRefused as exc:
        print(f"imagegate migrate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imagegate migrate: interrupted; what was copied is kept: run the same "
              "command again to resume", file=sys.stderr)  # fmt: skip
        return 130
    except _STOPS as exc:
        print(
            f"imagegate migrate: stopped: {exc}; what was copied is kept: fix that and run "
            "the same command again to resume",
            file=sys.stderr,
        )
        return 1
    _print_summary(done, run, left)
    _warn_unlisted_keys(source, target)
    return 0


def _settings(path: str, flag: str) -> Settings:
    environ = {k: v for k, v in os.environ.items() if k != "IMAGEGATE_DATA_DIR"}
    try:
        return load_settings(Path(path), environ)
    except ConfigError as exc:
        raise MigrationRefused(f"{flag}: config error: {exc}") from None


async def _migrate(
    source: Settings, target: Settings, run: Run, err: Console
) -> tuple[dict[str, Loaded], int]:
    async with open_transfer_stores(source) as old, open_transfer_stores(target) as new:
        left = await check_run(old, new, run)
        if err.is_terminal:
            with Bars(*_COLUMNS, console=err) as bars:
                return await copy_stores(old, new, _BarProgress(bars), run), left
        return await copy_stores(old, new, _LineProgress(), run), left


_COLUMNS: Final = (
    TextColumn("{task.description:<30}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


class _BarProgress:
    """A rich bar per store (no total: a pulsing bar)."""

    def __init__(self, bars: Bars) -> None:
        self._bars = bars
        self._tasks: dict[str, TaskID] = {}

    def start(self, step: str, total: int | None) -> None:
        self._tasks[step] = self._bars.add_task(_LABELS[step], total=total)

    def advance(self, step: str, done: int) -> None:
        self._bars.update(self._tasks[step], completed=done)

    def finish(self, step: str, loaded: Loaded) -> None:
        self._bars.update(self._tasks[step], total=loaded.seen, completed=loaded.seen)


class _LineProgress:
    """Plain lines, for logs (no terminal to draw bars on)."""

    def __init__(self) -> None:
        self._totals: dict[str, int | None] = {}
        self._shown = 0

    def start(self, step: str, total: int | None) -> None:
        self._totals[step] = total
        self._shown = 0

    def advance(self, step: str, done: int) -> None:
        total = self._totals[step]
        if done - self._shown < max(1, (total or 0) // 20):
            return  # about twenty lines per store
        self._shown = done
        shown = f"{done}/{total}" if total is not None else str(done)
        print(f"{_LABELS[step]}: {shown}", file=sys.stderr, flush=True)

    def finish(self, step: str, loaded: Loaded) -> None:
        print(f"{_LABELS[step]}: done ({loaded.copied} copied)", file=sys.stderr, flush=True)


def _warn_unlisted_keys(source: Settings, target: Settings) -> None:
    """Config keys are copied like any other, but a gateway revokes at start the config keys
    its own file does not list: say so before the user finds them revoked."""
    listed = {key.name for key in target.cost.keys}
    unlisted = sorted(key.name for key in source.cost.keys if key.name not in listed)
    if unlisted:
        print(
            f"note: [[keys]] {', '.join(unlisted)} are in --from's file and not in --to's: "
            "a gateway on --to revokes them at start unless you copy them into it",
            file=sys.stderr,
        )


def _reasons(skipped: Mapping[str, int]) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()) if n)


def _print_summary(done: Mapping[str, Loaded], run: Run, left: int) -> None:
    out = Console(highlight=False)
    copied = "copied" if run.write else "would copy"
    table = Table(title="imagegate migrate" + ("" if run.write else " (dry run)"))
    for column in ("store", copied, "already there", "not copied"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for step in STEPS:
        loaded = done[step]
        skipped = _reasons(loaded.skipped) or "0"
        table.add_row(_LABELS[step], str(loaded.copied), str(loaded.present), skipped)
    out.print(table)
    if left and run.write:
        out.print(f"{left} open reservation(s) were left in the source (--force).")
    elif left:
        out.print(
            f"{left} budget reservation(s) are open in the source: migrate refuses to run "
            "until they are settled (stop the gateway on it), or with --force leaves them."
        )
