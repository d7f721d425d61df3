"""`ExperimentTransfer` and `EventTransfer` over the embedded experiments database
(`data_dir/experiments.sqlite3`): `ExperimentFile` is the gateway's `ExperimentStore` with
the listing queries a migration needs. An experiment is created with its image copies in one
commit, as the gateway creates it; impressions are copied before conversions, each keeping
the variant and time it was recorded with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Final, Literal

from proxy.migration.records import EventRecord, ExperimentRecord, Loaded
from proxy.stores.experiments import ExperimentStore

__all__ = ["ExperimentFile", "SqliteEventTransfer", "SqliteExperimentTransfer"]

_PAGE: Final = 1000
_KINDS: Final[dict[str, Literal["impression", "conversion"]]] = {
    "impressions": "impression",
    "conversions": "conversion",
}


class ExperimentFile(ExperimentStore):
    """The experiments database with the reads and writes of a migration (synchronous)."""

    def records(self) -> list[ExperimentRecord]:
        found: list[ExperimentRecord] = []
        for experiment in self.experiments():
            images = {v.image: self.image(v.image) for v in experiment.variants}
            kept = {sha: data for sha, data in images.items() if data is not None}
            found.append(ExperimentRecord(experiment, kept))
        return found

    def add(self, records: Sequence[ExperimentRecord], write: bool) -> Loaded:
        copied = 0
        for record in records:
            if write:
                copied += self.create(record.experiment, record.images)
            else:
                copied += self.get(record.experiment.name) is None
        return Loaded(copied, len(records) - copied)

    def event_count(self) -> int:
        with self._read() as db:
            return sum(
                int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608  # fixed names
                for table in _KINDS
            )

    def event_page(self, table: str, after: tuple[str, str]) -> list[EventRecord]:
        """Events of `table` after (experiment, subject), in that order."""
        sql = (
            f"SELECT experiment, subject, variant, ts FROM {table} "  # noqa: S608  # fixed names
            "WHERE experiment > ? OR (experiment = ? AND subject > ?) "
            "ORDER BY experiment, subject LIMIT ?"
        )
        with self._read() as db:
            found = db.execute(sql, (after[0], after[0], after[1], _PAGE)).fetchall()
        kind = _KINDS[table]
        return [EventRecord(kind, str(e), str(s), str(v), float(t)) for e, s, v, t in found]

    def add_events(self, records: Sequence[EventRecord], write: bool) -> Loaded:
        copied = 0
        with self._write() as db:
            for r in records:
                table = f"{r.kind}s"
                assert table in _KINDS
                if write:
                    sql = f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?)"  # noqa: S608  # checked just above
                    copied += db.execute(sql, (r.experiment, r.subject, r.variant, r.ts)).rowcount
                else:
                    sql = f"SELECT 1 FROM {table} WHERE experiment = ? AND subject = ?"  # noqa: S608  # checked just above
                    copied += db.execute(sql, (r.experiment, r.subject)).fetchone() is None
        return Loaded(copied, len(records) - copied)


class SqliteExperimentTransfer:
    def __init__(self, store: ExperimentFile) -> None:
        self._db = store
        self.location = f"embedded experiments {store.path.resolve()}"

    async def count(self) -> int | None:
        return None  # experiments are few: the dump reads them all at once

    async def dump(self) -> AsyncIterator[ExperimentRecord]:
        for record in await asyncio.to_thread(self._db.records):
            yield record

    async def load(self, records: Sequence[ExperimentRecord], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._db.add, records, write)


class SqliteEventTransfer:
    def __init__(self, store: ExperimentFile) -> None:
        self._db = store
        self.location = f"embedded experiment events {store.path.resolve()}"

    async def count(self) -> int | None:
        return await asyncio.to_thread(self._db.event_count)

    async def dump(self) -> AsyncIterator[EventRecord]:
        for table in _KINDS:
            after = ("", "")
            while page := await asyncio.to_thread(self._db.event_page, table, after):
                for event in page:
                    yield event
                after = (page[-1].experiment, page[-1].subject)

    async def load(self, records: Sequence[EventRecord], *, write: bool = True) -> Loaded:
        return await asyncio.to_thread(self._db.add_events, records, write)
