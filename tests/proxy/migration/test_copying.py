"""The order and rules of a run, in process over real embedded files: an entry is copied only
once its image is in the target; steps run in order; a dry run writes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from policies.models import Entry
from proxy.config import Settings
from proxy.migration.copying import STEPS, MigrationRefused, Run, check_run, copy_stores
from proxy.migration.records import Loaded
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.transfer_opening import open_transfer_stores

NOW = 1_800_000_000.0
WRITE = Run()
NO_IMAGE = "its image is not in the target (see blobs)"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def start(self, step: str, total: int | None) -> None:
        self.events.append(("start", step))

    def advance(self, step: str, done: int) -> None:
        return None

    def finish(self, step: str, loaded: Loaded) -> None:
        self.events.append(("finish", step))


def _entry(blob: str) -> Entry:
    return Entry(blob, "png", 8, 8, "m", "p", 0, NOW)


def _source(data: Path, kept: bytes, gone: bytes) -> None:
    blobs, entries = DiskBlobStore(data / "blobs"), DiskEntryStore(data / "entries")
    entries.put("kept", 0, _entry(blobs.put(kept)))
    entries.put("gone", 0, _entry(hashlib.sha256(gone).hexdigest()))  # its blob was evicted
    blobs.close()
    entries.close()


def _entries(data: Path) -> dict[str, Entry | None]:
    store = DiskEntryStore(data / "entries")
    found = {key: store.get(key, 0) for key in ("kept", "gone")}
    store.close()
    return found


async def _run(old: Path, new: Path, run: Run = WRITE) -> tuple[dict[str, Loaded], Recorder]:
    progress = Recorder()
    async with (
        open_transfer_stores(Settings(data_dir=old)) as source,
        open_transfer_stores(Settings(data_dir=new)) as target,
    ):
        await check_run(source, target, run)
        return await copy_stores(source, target, progress, run), progress


async def test_an_entry_whose_image_is_gone_is_not_copied(tmp_path):
    _source(tmp_path / "old", b"kept image", b"gone image")

    done, progress = await _run(tmp_path / "old", tmp_path / "new")

    assert done["entries"] == Loaded(copied=1, skipped={NO_IMAGE: 1})
    assert _entries(tmp_path / "new") == {"kept": _entry(_sha(b"kept image")), "gone": None}
    assert progress.events == [(event, step) for step in STEPS for event in ("start", "finish")]


async def test_an_entry_whose_image_the_target_has_is_copied(tmp_path):
    _source(tmp_path / "old", b"kept image", b"gone image")
    blobs = DiskBlobStore(tmp_path / "new/blobs")
    blobs.put(b"gone image")
    blobs.close()

    done, _ = await _run(tmp_path / "old", tmp_path / "new")

    assert done["entries"] == Loaded(copied=2)
    assert _entries(tmp_path / "new")["gone"] == _entry(_sha(b"gone image"))


async def test_a_dry_run_counts_entries_whose_image_would_be_copied(tmp_path):
    _source(tmp_path / "old", b"kept image", b"gone image")

    done, _ = await _run(tmp_path / "old", tmp_path / "new", Run(write=False))

    assert done["blobs"] == Loaded(copied=1)
    assert done["entries"] == Loaded(copied=1, skipped={NO_IMAGE: 1})
    assert _entries(tmp_path / "new") == {"kept": None, "gone": None}


async def test_the_same_stores_on_both_sides_are_refused(tmp_path):
    _source(tmp_path / "old", b"kept image", b"gone image")

    with pytest.raises(MigrationRefused, match="same stores"):
        await _run(tmp_path / "old", tmp_path / "old/../old")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
