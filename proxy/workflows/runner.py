"""Running the lines of a batch: bounded concurrency, a budget, files and journal per line."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from policies.budget import format_usd, split_micros
from proxy.workflows.batch_input import BatchLine
from proxy.workflows.gateway import GatewayClient
from proxy.workflows.manifest import (
    FAILURES,
    MANIFEST,
    Journal,
    JournalEntry,
    Record,
    file_extension,
    image_filename,
    records_intact,
    write_bytes_atomic,
    write_json_atomic,
)
from proxy.workflows.outcomes import LineFailed, Made, stops_the_run
from proxy.workflows.progress import BatchProgress, Tally, line_of

__all__ = ["BatchRun", "SpendCap", "failure_record", "resumable", "write_outputs"]

_CACHED = frozenset({"HIT", "COALESCED"})


@dataclass(slots=True)
class SpendCap:
    """`--budget-usd`: stops scheduling before the micro-USD spent could pass `limit`.

    A line is admitted only while spent + the highest per-image cost seen so far, times the
    images in flight plus this line's, stays within the limit. Until a first cost is known,
    lines run one at a time, so an unknown price can overshoot by one line at most.
    """

    limit: int | None  # micro-USD
    spent: int = 0  # micro-USD
    per_image: Fraction | None = None  # micro-USD, exact (a line's cost over its images)
    reserved: int = 0  # images of the lines in flight

    def admits(self, images: int) -> bool:
        if self.limit is None:
            return True
        if self.per_image is None:
            return self.reserved == 0
        return self.spent + self.per_image * (self.reserved + images) <= self.limit

    def charge(self, cost_micros: int, images: int) -> None:
        self.spent += cost_micros
        share = Fraction(cost_micros, max(images, 1))
        self.per_image = share if self.per_image is None else max(self.per_image, share)


class BatchRun:
    """Runs pending lines; collects manifest records (by line) and failure records.

    Until the gateway has answered once (any status but 401 or 403: it is up and takes the
    key), lines run one at a time: a failure that stops the run (`stops_the_run`: no key,
    gateway down) then costs one line, not `concurrency` of them. After such a failure,
    `stopped` holds it and no further line starts; the lines not started are `skipped`,
    left for a re-run.
    """

    def __init__(
        self,
        gateway: GatewayClient,
        journal: Journal,
        out: Path,
        *,
        concurrency: int,
        budget: SpendCap,
        progress: BatchProgress,
    ) -> None:
        self.gateway = gateway
        self.journal = journal
        self.out = out
        self.concurrency = concurrency
        self.budget = budget
        self.progress = progress
        self.tally: Tally = progress.tally
        self.records: dict[int, list[Record]] = {}
        self.failures: list[Record] = []
        self.skipped: list[BatchLine] = []
        self._in_flight = 0
        self._changed = asyncio.Condition()
        self._answered = False  # the gateway is up and takes the key: open up to concurrency
        self.stopped: LineFailed | None = None  # the failure that stopped scheduling

    @property
    def quota_exhausted(self) -> bool:
        """The gateway's own budget said no (`insufficient_quota`)."""
        return self.stopped is not None and self.stopped.code == "insufficient_quota"

    async def run(self, lines: list[BatchLine]) -> None:
        """Run every line, `concurrency` at a time, until done or the budget says stop."""
        async with asyncio.TaskGroup() as group:
            for position, line in enumerate(lines):
                if not await self._admit(line):
                    self.skipped = lines[position:]
                    self.tally.skipped = len(self.skipped)
                    self.progress.refresh(force=True)
                    break
                group.create_task(self._line(line))

    async def heard(self, status: int) -> None:
        """The GatewayClient's hook: the gateway answered an attempt with `status`."""
        if not self._answered and status not in (401, 403):
            async with self._changed:
                self._answered = True
                self._changed.notify_all()

    def fail(self, line: BatchLine, error: LineFailed) -> None:
        self.failures.append(failure_record(line, error))
        self.tally.failed += 1

    async def _admit(self, line: BatchLine) -> bool:
        async with self._changed:
            while True:
                if self.stopped is not None:
                    return False
                width = self.concurrency if self._answered else 1
                if self._in_flight < width and self.budget.admits(line.n):
                    self._in_flight += 1
                    self.budget.reserved += line.n
                    return True
                if self._in_flight == 0:
                    return False
                await self._changed.wait()

    async def _line(self, line: BatchLine) -> None:
        try:
            made = await self.gateway.generate(line.body)
            self.budget.charge(made.cost_micros, line.n)
            self.tally.spent = self.budget.spent
            records = await asyncio.to_thread(self._save, line, made)
            entry = JournalEntry(line.line, line.digest, tuple(records))
            await asyncio.to_thread(self.journal.append, entry)
        except LineFailed as exc:
            self.fail(line, exc)
            if stops_the_run(exc) and self.stopped is None:
                self.stopped = exc  # every later line would get the same answer
        except OSError as exc:
            self.fail(line, LineFailed(f"cannot write the output: {exc}", code="write_failed"))
        else:
            self.records[line.line] = records
            self.tally.done += 1
            self.tally.cached += made.headers.get("x-cache", "") in _CACHED
        finally:
            async with self._changed:
                self._in_flight -= 1
                self.budget.reserved -= line.n
                self._changed.notify_all()
            self.progress.refresh()

    def _save(self, line: BatchLine, made: Made) -> list[Record]:
        """Write the line's images (atomically) and return their manifest records."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        costs = split_micros(made.cost_micros, len(made.images))
        records: list[Record] = []
        for index, data in enumerate(made.images):
            ext = file_extension(data, made.output_format or _text(line.body, "output_format"))
            count = max(line.n, len(made.images))
            name = image_filename(line.line, line.name or line.prompt, index, count, ext)
            write_bytes_atomic(self.out / name, data)
            record = _record(line, made, index, data)
            record.update(file=name, cost_usd=format_usd(costs[index]), timestamp=now)
            records.append(record)
        return records


def _record(line: BatchLine, made: Made, index: int, data: bytes) -> Record:
    headers = made.headers
    revised = made.revised_prompts[index] if index < len(made.revised_prompts) else None
    return {
        "line": line.line,
        "index": index,
        "name": line.name,
        "tags": list(line.tags),
        "prompt": line.prompt,
        "revised_prompt": revised,
        "model": headers.get("x-imagegate-model") or _text(line.body, "model"),
        "provider": headers.get("x-imagegate-provider"),
        "size": made.size or _dimensions(data) or _text(line.body, "size"),
        "quality": made.quality or _text(line.body, "quality"),
        "params": dict(line.body),
        "file": "",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "cost_usd": "0",
        "cache": headers.get("x-cache"),
        "timestamp": "",
        "request_id": headers.get("x-request-id"),
        "cache_key": headers.get("x-cache-key"),
        "attempts": made.attempts,
    }


def failure_record(line: BatchLine, error: LineFailed) -> Record:
    return {
        "line": line.line,
        "name": line.name,
        "prompt": line.prompt or None,
        "status": error.status,
        "error": error.message,
        "code": error.code,
        "type": error.type,
        "param": error.param,
        "attempts": error.attempts,
        "request_id": error.request_id,
    }


def _dimensions(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return f"{width}x{height}"


def _text(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def resumable(lines: list[BatchLine], journal: Journal, out: Path) -> dict[int, list[Record]]:
    """Lines the journal holds with the same request, whose files are intact on disk."""
    entries = journal.load()
    done: dict[int, list[Record]] = {}
    for line in lines:
        entry = entries.get(line.line)
        if (
            line.problem is None
            and entry is not None
            and entry.digest == line.digest
            and records_intact(out, entry.records)
        ):
            done[line.line] = list(entry.records)
    return done


def write_outputs(out: Path, records: dict[int, list[Record]], failures: list[Record]) -> None:
    manifest = [record for line in sorted(records) for record in records[line]]
    write_json_atomic(out / MANIFEST, manifest)
    write_json_atomic(out / FAILURES, sorted(failures, key=line_of))
