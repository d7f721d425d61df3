"""What a batch shows on stderr: a rich bar on a terminal (else periodic plain lines), and
the table of failed lines at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from policies.budget import format_usd
from proxy.workflows.manifest import Record
from proxy.workflows.outcomes import LineFailed

__all__ = ["BatchProgress", "Tally", "dollars", "line_of", "print_failures", "stop_text"]

_PLAIN_EVERY: Final = 2.0  # seconds between plain progress lines


def dollars(micros: int) -> str:
    """`$0.04`, `$0`, `$0.000125`: exact, no trailing zeros, never scientific notation."""
    return f"${format_usd(micros)}"


@dataclass(slots=True)
class Tally:
    total: int
    done: int = 0  # succeeded in this run
    cached: int = 0  # of those, served by the gateway's cache (HIT or COALESCED)
    failed: int = 0
    resumed: int = 0  # already in the journal: not asked again
    skipped: int = 0  # not run: the budget stopped the batch
    spent: int = 0  # micro-USD

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.resumed + self.skipped

    def summary(self) -> str:
        parts = [f"{self.done} done ({self.cached} cached)", f"{self.failed} failed"]
        if self.resumed:
            parts.append(f"{self.resumed} resumed")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return " · ".join([*parts, f"{dollars(self.spent)} spent"])


class BatchProgress:
    """Call `refresh()` after changing the tally; it redraws (or prints, rate-limited)."""

    def __init__(self, tally: Tally, console: Console) -> None:
        self.tally = tally
        self.console = console
        self._live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_print = 0.0

    def __enter__(self) -> BatchProgress:
        if self._live:
            self._progress = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "batch", total=self.tally.total, stats=self.tally.summary()
            )
        self.refresh(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.refresh(force=True)
        if self._progress is not None:
            self._progress.stop()

    def refresh(self, *, force: bool = False) -> None:
        tally = self.tally
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=tally.finished, stats=tally.summary())
            return
        now = time.monotonic()
        if force or now - self._last_print >= _PLAIN_EVERY:
            self._last_print = now
            line = f"batch: {tally.finished}/{tally.total} lines · {tally.summary()}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_failures(console: Console, failures: list[Record]) -> None:
    """The failed lines as a table: line, name, the API's error message, HTTP status."""
    if not failures:
        return
    table = Table(title=f"{len(failures)} failed line(s)", title_justify="left")
    for column in ("line", "name", "status", "error"):
        table.add_column(column, overflow="fold")
    for failure in sorted(failures, key=line_of):
        status = failure["status"]
        cells = (failure["line"], failure["name"] or "", "" if status is None else status)
        # Names and the gateway's messages are text, not markup ("set [auth] admin_key").
        table.add_row(*(escape(str(cell)) for cell in (*cells, failure["error"])))
    console.print(table)


def line_of(record: Record) -> int:
    line = record["line"]
    return line if isinstance(line, int) else 0


def stop_text(error: LineFailed, gateway: str, *, key_given: bool, skipped: list[int]) -> str:
    """Why a batch stopped before its end (`outcomes.stops_the_run`), and what to do about it."""
    if error.status == 401 and not key_given:
        why = (
            f"no API key given, and the gateway at {gateway} wants one: pass --api-key KEY "
            "or set $OPENAI_API_KEY"
        )
    elif error.status in (401, 403):
        why = f"the gateway at {gateway} refused the API key ({error.status}: {error.message})"
    else:
        why = (
            f"cannot reach the gateway at {gateway} after {error.attempts} attempt(s) "
            f"({error.message})"
        )
    left = ""
    if skipped:
        left = f"; {len(skipped)} line(s) not run, from line {skipped[0]}, left for a re-run"
    return f"stopped: {why}{left}"
