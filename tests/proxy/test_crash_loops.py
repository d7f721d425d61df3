"""Crash loops: kill -9 at random moments of a mixed load, restart, and check that nothing
was lost, half-written or left reserved (pieces: tests/crash_harness.py; loop:
tests/crash_loop.py).

Each run sends a mix drawn from a numbered RNG: generations and edits, n 1..3, b64 and url
answers, dall-e-2 at 256x256 and a few gpt-image-1-mini at 1024x1024; misses, coalesced
calls and hits (prompts overlap the previous run's). They go through the openai SDK to
`imagegate serve` in front of a fake OpenAI, 12 at a time; after a random number of answers
plus a random pause the gateway's whole process group gets SIGKILL. Then, with no gateway
running: every blob file hashes to its address, every entry parses and its blob is there,
every image answered before the kill is stored, and every row settled for a 200 answer
with a cost (matched by X-Request-Id, any run so far) is in the ledger with that cost. After
the restart on the same data dir: no reservation is open, and the rows written for the
ones the kill left are none (released) or one each (the `orphaned` rule); every 200 answer
of the run, asked again with `only-if-cached`, is a HIT with the same images; every blob
not fetched yet hashes to its name at `GET /images/<sha>.<ext>`.

Defaults: 20 runs of 25 calls (500 in all; the part of a run's mix after the kill is not
sent), and RUNS // 10 runs with `--workers 2`. The time goes to process starts (21 of them,
0.6 s of CPU each for the imports alone), not requests, so runs are short rather than
few. IMAGEGATE_CRASH_RUNS and IMAGEGATE_CRASH_REQUESTS (per run) make it longer;
IMAGEGATE_CRASH_RNG replays one sequence of mixes and kill moments (a failure names it).
Run with `-s` to see what was checked.
"""

from __future__ import annotations

import os
import random
import sqlite3

import pytest

from policies.models import Entry
from proxy.stores.disk import DiskBlobStore, DiskEntryStore
from proxy.stores.ledger import SqliteLedger
from tests.crash_harness import orphan_rows, read_disk
from tests.crash_loop import CrashLoop
from tests.fakes.images import make_png
from tests.fakes.openai_server import FakeOpenAI

RUNS = int(os.environ.get("IMAGEGATE_CRASH_RUNS", "20"))
PER_RUN = int(os.environ.get("IMAGEGATE_CRASH_REQUESTS", "25"))
RNG = int(os.environ.get("IMAGEGATE_CRASH_RNG", str(random.SystemRandom().randrange(10**6))))


def report(loop: CrashLoop) -> None:
    print(f"\n{loop.label} rng={loop.rng_number}: {loop.tally.line()}")


@pytest.mark.timeout(max(600, RUNS * 30))
async def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    async with FakeOpenAI() as fake:
        loop = CrashLoop(tmp_path, fake.base_url, "one process", RNG, per_run=PER_RUN)
        tally = await loop.run(RUNS)
    report(loop)
    assert tally.runs == tally.kills == RUNS
    assert tally.answered > 0
    assert tally.replays == tally.answered
    assert tally.reservations_open_at_kill > 0  # the kills did land mid-miss


@pytest.mark.timeout(max(600, RUNS * 30))
async def test_kill_9_of_two_workers_and_their_supervisor_loses_nothing(tmp_path):
    runs = max(1, RUNS // 10)  # two at the default: each start spawns three interpreters
    async with FakeOpenAI() as fake:
        loop = CrashLoop(tmp_path, fake.base_url, "--workers 2", RNG, per_run=PER_RUN, workers=2)
        tally = await loop.run(runs)
    report(loop)
    assert tally.runs == tally.kills == runs
    assert tally.answered > 0
    assert tally.replays == tally.answered


def test_the_disk_check_catches_a_torn_blob(tmp_path):
    """The checks can fail: a blob file cut short after its row was committed (what a torn
    write would leave) is named, and so is a stray file no row names."""
    data = tmp_path / "data"
    blobs = DiskBlobStore(data / "blobs")
    entries = DiskEntryStore(data / "entries")
    sha = blobs.put(make_png(32, 32))
    entries.put("k" * 64, 0, Entry(sha, "png", 32, 32, "dall-e-2", "openai", 16_000, 1.0))
    SqliteLedger(data / "ledger.sqlite3").close()
    stored = blobs.open(sha)
    assert stored is not None
    path = stored.path
    blobs.close()
    entries.close()
    assert read_disk(data).blobs == {sha: "png"}

    (path.parent / "stray.val").write_bytes(b"written, never committed")
    assert read_disk(data).stray_files == 1
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AssertionError, match=f"blob {sha} torn on disk"):
        read_disk(data)


def test_orphan_rows_are_counted_whichever_way_they_are_marked(tmp_path):
    """The restart may release a dead process's reservations (no rows) or settle each at its
    quote as an `orphaned` row; the loop counts the latter by reservation id or by mark."""
    data = tmp_path / "data"
    SqliteLedger(data / "ledger.sqlite3").close()
    db = sqlite3.connect(data / "ledger.sqlite3")
    insert = (
        "INSERT INTO ledger (ts, images, cost_micros, saved_micros, cache, reservation) "
        "VALUES (1.0, 1, 16000, 0, ?, ?)"
    )
    db.execute(insert, ("MISS", "r-settled"))
    assert orphan_rows(data, {"r-1", "r-2"}) == 0
    db.execute(insert, ("MISS", "r-1"))  # named by its reservation
    db.execute(insert, ("ORPHANED", None))  # marked only
    db.commit()
    db.close()
    assert orphan_rows(data, {"r-1", "r-2"}) == 2
