"""A/B experiments, their impressions and conversions, in SQLite (`data_dir/experiments.sqlite3`).

Durability as the ledger: WAL with `synchronous=FULL`, one connection per process behind a
lock, every write one `BEGIN IMMEDIATE` transaction. Several processes may share the file.

- `experiments(name, created, variants_json)`: each variant's id, label, weight, control
  flag, image sha256 and format, and where the image came from (request key and index).
- `images(sha256, format, data)`: a copy of every variant image, so that an experiment keeps
  serving when the gateway's blob cache evicts or heals the blob.
- `impressions(experiment, subject, variant, ts)`: one per subject; the first one wins, so a
  subject keeps the variant it was first shown.
- `conversions(experiment, subject, variant, ts)`: one per subject, for the variant shown.

Methods are synchronous and thread-safe; the routes call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from policies.abtest import Counts, Variant
from proxy.stores.sqlite_db import SqliteDatabase

__all__ = ["Conversion", "Experiment", "ExperimentStore", "ImageVariant", "Impression"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS experiments (
  name TEXT PRIMARY KEY, created REAL NOT NULL, variants_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
  sha256 TEXT PRIMARY KEY, format TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS impressions (
  experiment TEXT NOT NULL, subject TEXT NOT NULL, variant TEXT NOT NULL, ts REAL NOT NULL,
  PRIMARY KEY (experiment, subject)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS impressions_variant ON impressions (experiment, variant);
CREATE TABLE IF NOT EXISTS conversions (
  experiment TEXT NOT NULL, subject TEXT NOT NULL, variant TEXT NOT NULL, ts REAL NOT NULL,
  PRIMARY KEY (experiment, subject)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS conversions_variant ON conversions (experiment, variant)
"""


@dataclass(frozen=True, slots=True)
class ImageVariant:
    """A variant of an experiment: the assignment fields and the image it shows."""

    variant: Variant
    image: str  # sha256 of the image bytes (a blob of the gateway's BlobStore)
    format: str  # png, jpeg, webp, gif or svg: the extension of /images/<sha256>.<ext>
    request_key: str | None = None
    index: int | None = None

    def to_json(self) -> dict[str, Any]:
        v = self.variant
        return {
            "id": v.id,
            "label": v.label,
            "weight": v.weight,
            "control": v.control,
            "image": self.image,
            "format": self.format,
            "request_key": self.request_key,
            "index": self.index,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ImageVariant:
        variant = Variant(raw["id"], raw["weight"], raw["control"], raw["label"])
        return cls(variant, raw["image"], raw["format"], raw["request_key"], raw["index"])


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    created: float
    variants: tuple[ImageVariant, ...]

    @property
    def assignable(self) -> tuple[Variant, ...]:
        return tuple(v.variant for v in self.variants)

    def find(self, variant_id: str) -> ImageVariant | None:
        return next((v for v in self.variants if v.variant.id == variant_id), None)


@dataclass(frozen=True, slots=True)
class Impression:
    variant: str
    first: bool  # False: the subject had seen the experiment before (nothing recorded)


@dataclass(frozen=True, slots=True)
class Conversion:
    variant: str | None  # None: the subject never saw the experiment (nothing recorded)
    first: bool


class ExperimentStore(SqliteDatabase):
    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        super().__init__(path, _SCHEMA, busy_timeout=busy_timeout)

    # -- experiments -----------------------------------------------------------------------

    def create(self, experiment: Experiment, images: Mapping[str, bytes]) -> bool:
        """Store a new experiment and copies of its images; False when the name is taken."""
        variants = json.dumps([v.to_json() for v in experiment.variants])
        formats = {v.image: v.format for v in experiment.variants}
        with self._write() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO experiments VALUES (?, ?, ?)",
                (experiment.name, experiment.created, variants),
            ).rowcount
            if inserted:
                db.executemany(
                    "INSERT OR IGNORE INTO images VALUES (?, ?, ?)",
                    [(sha, formats[sha], data) for sha, data in images.items()],
                )
            return inserted == 1

    def get(self, name: str) -> Experiment | None:
        with self._read() as db:
            found = db.execute(
                "SELECT name, created, variants_json FROM experiments WHERE name = ?", (name,)
            ).fetchone()
        return None if found is None else _experiment(found)

    def experiments(self) -> list[Experiment]:
        with self._read() as db:
            found = db.execute(
                "SELECT name, created, variants_json FROM experiments ORDER BY created, name"
            ).fetchall()
        return [_experiment(row) for row in found]

    def delete(self, name: str) -> bool:
        """Drop the experiment with its impressions, conversions and unshared image copies."""
        with self._write() as db:
            gone = db.execute("DELETE FROM experiments WHERE name = ?", (name,)).rowcount
            db.execute("DELETE FROM impressions WHERE experiment = ?", (name,))
            db.execute("DELETE FROM conversions WHERE experiment = ?", (name,))
            kept = {
                v.image for row in db.execute("SELECT * FROM experiments") for v in _variants(row)
            }
            for (sha,) in db.execute("SELECT sha256 FROM images").fetchall():
                if sha not in kept:
                    db.execute("DELETE FROM images WHERE sha256 = ?", (sha,))
            return gone == 1

    def image(self, sha256: str) -> bytes | None:
        """The experiment's own copy of an image."""
        with self._read() as db:
            found = db.execute("SELECT data FROM images WHERE sha256 = ?", (sha256,)).fetchone()
        return None if found is None else bytes(found[0])

    # -- events ----------------------------------------------------------------------------

    def record_impression(
        self, experiment: str, subject: str, variant: str, ts: float
    ) -> Impression:
        """Record the subject's first impression; the variant the subject is shown (an
        earlier impression's variant wins over `variant`)."""
        with self._write() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO impressions VALUES (?, ?, ?, ?)",
                (experiment, subject, variant, ts),
            ).rowcount
            if inserted:
                return Impression(variant, True)
            shown = db.execute(
                "SELECT variant FROM impressions WHERE experiment = ? AND subject = ?",
                (experiment, subject),
            ).fetchone()[0]
            return Impression(shown, False)

    def seen(self, experiment: str, subject: str) -> str | None:
        """The variant the subject was shown, or None."""
        with self._read() as db:
            found = db.execute(
                "SELECT variant FROM impressions WHERE experiment = ? AND subject = ?",
                (experiment, subject),
            ).fetchone()
        return None if found is None else str(found[0])

    def record_conversion(self, experiment: str, subject: str, ts: float) -> Conversion:
        """Count the subject's conversion once, for the variant it was shown."""
        with self._write() as db:
            shown = db.execute(
                "SELECT variant FROM impressions WHERE experiment = ? AND subject = ?",
                (experiment, subject),
            ).fetchone()
            if shown is None:
                return Conversion(None, False)
            inserted = db.execute(
                "INSERT OR IGNORE INTO conversions VALUES (?, ?, ?, ?)",
                (experiment, subject, shown[0], ts),
            ).rowcount
            return Conversion(str(shown[0]), inserted == 1)

    def counts(self, experiment: str) -> dict[str, Counts]:
        """Impressions and conversions per variant id (variants with none are absent)."""
        with self._read() as db:
            shown = dict(_grouped(db, "impressions", experiment))
            converted = dict(_grouped(db, "conversions", experiment))
        return {
            variant: Counts(shown.get(variant, 0), converted.get(variant, 0))
            for variant in shown.keys() | converted.keys()
        }


def _grouped(db: sqlite3.Connection, table: str, experiment: str) -> Sequence[tuple[str, int]]:
    assert table in ("impressions", "conversions")
    sql = f"SELECT variant, COUNT(*) FROM {table} WHERE experiment = ? GROUP BY variant"  # noqa: S608  # fixed table names
    return [(str(v), int(n)) for v, n in db.execute(sql, (experiment,))]


def _variants(row: Sequence[Any]) -> tuple[ImageVariant, ...]:
    return tuple(ImageVariant.from_json(raw) for raw in json.loads(row[2]))


def _experiment(row: Sequence[Any]) -> Experiment:
    return Experiment(str(row[0]), float(row[1]), _variants(row))
