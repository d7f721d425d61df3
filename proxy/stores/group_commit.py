"""Spend rows settled close together share one transaction and one fsync (group commit).

The ledger commits with `synchronous=FULL`: every COMMIT waits for an fsync of the WAL (a
millisecond or more on a real disk), holding SQLite's write lock meanwhile. `GroupCommitter`
writes the steps (`settle`s) that arrive while a batch is being committed, or within
`window` seconds of the first step of a batch, in the next single `BEGIN IMMEDIATE ...
COMMIT`:

- each step runs in its own SAVEPOINT: one that raises is rolled back alone and only its
  caller gets the exception; the other steps of the batch commit;
- if the transaction itself fails (BEGIN, COMMIT, an error that aborts it), every caller of
  that batch gets the error and none of its steps is written;
- `await run(step)` returns only once the COMMIT that holds the step has returned: a row is
  exactly as durable as when it had a commit of its own.

A queued step belongs to the committer, not to its caller: a caller cancelled while its step
waits or is being written stops waiting, and the step is written all the same (a spend row
records money an upstream has already billed). One batch runs at a time, in a thread off the
event loop. Each worker process batches its own steps; SQLite's write lock serialises the
processes, as it serialises their single commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial

from proxy.stores.sqlite_db import SqliteDatabase

__all__ = ["GroupCommitter", "Step"]

Step = Callable[[sqlite3.Connection], None]
_Waiting = tuple[Step, "asyncio.Future[None]"]


def _run_in_savepoint(db: sqlite3.Connection, step: Step) -> Exception | None:
    """Run `step`; if it raises, undo what it wrote (only that) and return the error."""
    db.execute("SAVEPOINT step")
    try:
        step(db)
    except Exception as exc:  # handed to the step's caller, not swallowed
        db.execute("ROLLBACK TO step")
        db.execute("RELEASE step")
        return exc
    db.execute("RELEASE step")
    return None


class GroupCommitter:
    """`await run(step)`: `step(db)` runs in a write transaction shared with the steps queued
    beside it, and `run` returns once that transaction is committed (see the module).

    `window`: seconds the first step of a batch waits for others (0: only the steps that
    queued while the previous batch was written, or in the same turn of the loop, join it).
    `before_commit(size)`: called in the writing thread after a batch's steps, before its
    COMMIT (tests hold a commit with it, or fail one). `commits`: batches committed."""

    def __init__(
        self,
        database: SqliteDatabase,
        *,
        window: float = 0.0,
        before_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._database = database
        self._window = window
        self._before_commit = before_commit
        self._queue: list[_Waiting] = []
        self._busy: asyncio.Future[None] | None = None  # while steps wait or are written
        self.commits = 0

    @property
    def queued(self) -> int:
        """Steps waiting for the next batch (not counting the batch being written)."""
        return len(self._queue)

    async def run(self, step: Step) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((step, done))
        if self._busy is None:
            self._busy = loop.create_future()
            loop.call_later(self._window, self._start, loop)
        await done  # cancelled, it stops waiting; the step stays in its batch

    async def drain(self) -> None:
        """Wait until every queued step has been written (before the database closes)."""
        if self._busy is not None:
            await asyncio.shield(self._busy)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue, []
        work = loop.run_in_executor(None, self._write, [step for step, _ in batch])
        work.add_done_callback(partial(self._finish, loop, batch))

    def _write(self, steps: list[Step]) -> list[Exception | None]:
        """One transaction (in a thread): each step's error, or None where it succeeded."""
        with self._database.transaction() as db:
            outcomes = [_run_in_savepoint(db, step) for step in steps]
            if self._before_commit is not None:
                self._before_commit(len(steps))
        self.commits += 1
        return outcomes

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Waiting],
        work: asyncio.Future[list[Exception | None]],
    ) -> None:
        """Answer the batch's callers, then start the next batch or go idle."""
        outcomes: Sequence[BaseException | None]
        if work.cancelled():  # nothing cancels it; were it so, no caller may wait for ever
            outcomes = [asyncio.CancelledError()] * len(batch)
        elif (failed := work.exception()) is not None:  # BEGIN or COMMIT failed: all of it
            outcomes = [failed] * len(batch)
        else:
            outcomes = work.result()
        for (_, done), error in zip(batch, outcomes, strict=True):
            if done.done():  # its caller was cancelled; the step ran all the same
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
        if self._queue:
            self._start(loop)
        elif self._busy is not None:
            busy, self._busy = self._busy, None
            busy.set_result(None)
