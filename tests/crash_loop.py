"""The crash loop: load, kill -9, check the data dir, restart, check through HTTP; again.

The pieces (the gateway process, the request mix, the disk reader) are in
tests/crash_harness.py; tests/proxy/test_crash_loops.py runs the loops.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from tests.crash_harness import (
    EXTS,
    SECRET,
    Answer,
    Call,
    DiskState,
    GatewayProcess,
    make_mix,
    open_reservations,
    orphan_rows,
    read_disk,
    send,
    write_config,
)

__all__ = ["CrashLoop", "Tally"]


@dataclass
class Tally:
    """What a crash loop did and checked, summed over its runs."""

    runs: int = 0
    requests: int = 0  # calls sent (the rest of a run's mix is dropped at the kill)
    answered: int = 0  # 200 answers before a kill
    cut: int = 0  # calls whose connection died with the gateway
    kills: int = 0
    reservations_open_at_kill: int = 0
    orphan_rows: int = 0  # rows the restart wrote for them (0 while they are only released)
    settled_checked: int = 0  # (request id, cost) pairs found in the ledger, all kills summed
    entries_checked: int = 0  # entries parsed with their blob present, all kills summed
    blobs_hashed: int = 0  # blob files hashed on disk, all kills summed
    replays: int = 0  # 200 answers asked again (only-if-cached): HIT, same images
    served_under_load: int = 0  # url answers' images fetched before the kill, and hashed
    blobs_served: int = 0  # distinct blobs fetched from /images/ after a restart, and hashed
    outcomes: dict[str, int] = field(default_factory=dict)  # X-Cache of the 200 answers
    stray_blob_files: int = 0  # files under blobs/ no index row names, at the last kill
    settled_rows: int = 0  # distinct settled rows checked (answered 200 with a cost)
    entries_at_last_kill: int = 0
    blobs_at_last_kill: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in vars(self).items())


@dataclass
class CrashLoop:
    """Run, kill -9, check the data dir, restart, check through HTTP; again, `runs` times."""

    directory: Path
    upstream: str
    label: str  # names the loop in failure messages, with its RNG number
    rng_number: int
    per_run: int = 25
    in_flight: int = 12
    workers: int = 1
    tally: Tally = field(default_factory=Tally)
    settled: dict[str, int] = field(default_factory=dict)  # every settled row seen answered
    served: set[str] = field(default_factory=set)
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.rng_number)
        self.config = write_config(self.directory, self.upstream)
        self.data = self.directory / "data"

    def where(self, run: int) -> str:
        return f"[{self.label} rng={self.rng_number} run={run}]"

    async def run(self, runs: int) -> Tally:
        gateway = await GatewayProcess.start(self.config, workers=self.workers)
        self.http = httpx.AsyncClient(timeout=60)  # for /images/ (the SDK only does /v1)
        try:
            for run in range(runs):
                try:
                    answers = await self._load_and_kill(gateway, run)
                    state = self._check_disk(run, answers)
                    before = orphan_rows(self.data, set(state.reservations))
                    gateway = await GatewayProcess.start(self.config, workers=self.workers)
                    await self._check_restarted(gateway, run, answers, state, before)
                except BaseException as exc:
                    exc.add_note(f"{self.where(run)} (IMAGEGATE_CRASH_RNG={self.rng_number})")
                    raise
                self.tally.runs += 1
        finally:
            await self.http.aclose()
            if gateway.proc.returncode is None:
                await gateway.kill9()
        return self.tally

    async def _load_and_kill(self, gateway: GatewayProcess, run: int) -> list[Answer]:
        calls = make_mix(self.rng, run, self.per_run)
        kill_after = self.rng.randrange(1, self.per_run)  # answers, then a random pause
        pause = self.rng.uniform(0, 0.05)
        gate = asyncio.Semaphore(self.in_flight)
        done = asyncio.Event()
        answers: list[Answer] = []
        killed = False

        async def one(call: Call) -> None:
            async with gate:
                if killed:
                    return
                answer = await send(client, call)
                answers.append(answer)
                await self._fetch_urls(answer)
                if len(answers) >= kill_after:
                    done.set()

        async with openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key=SECRET, max_retries=0, timeout=60
        ) as client:
            tasks = [asyncio.create_task(one(call)) for call in calls]
            await asyncio.wait_for(done.wait(), 120)
            await asyncio.sleep(pause)
            killed = True  # calls still waiting for a turn are not sent
            await gateway.kill9()
            await asyncio.gather(*tasks)
        self.tally.kills += 1
        self.tally.requests += len(answers)
        bad = [a for a in answers if a.status not in (0, 200)]
        assert not bad, f"{self.where(run)} error answers: {[(a.status, a.error) for a in bad]}"
        for answer in answers:
            if answer.status == 0:
                self.tally.cut += 1
            else:
                self.tally.answered += 1
                counts = self.tally.outcomes
                counts[answer.cache] = counts.get(answer.cache, 0) + 1
                if answer.cost_micros > 0:
                    self.settled[answer.call.request_id] = answer.cost_micros
        return [a for a in answers if a.status == 200]

    async def _fetch_urls(self, answer: Answer) -> None:
        """Fetch the images of a url answer while the load runs: each hashes to its name
        (or the fetch dies with the gateway)."""
        for url, sha in zip(answer.urls, answer.images, strict=False):
            try:
                got = await self.http.get(url)
            except httpx.TransportError:
                return  # killed meanwhile
            assert got.status_code == 200, f"{answer.call.request_id}: {got.status_code}"
            assert hashlib.sha256(got.content).hexdigest() == sha, f"{sha} served torn"
            self.tally.served_under_load += 1

    def _check_disk(self, run: int, answers: list[Answer]) -> DiskState:
        where = self.where(run)
        state = read_disk(self.data)  # raises on a torn blob or an unreadable entry
        self.tally.blobs_hashed += len(state.blobs)
        for key, entry in state.entries.items():
            assert entry["blob"] in state.blobs, f"{where} entry {key} lost its blob"
        self.tally.entries_checked += len(state.entries)
        for request_id, micros in self.settled.items():
            got = state.ledger.get(request_id)
            assert got == micros, f"{where} settled row {request_id}: {got} != {micros}"
        self.tally.settled_checked += len(self.settled)
        for answer in answers:
            lost = [sha for sha in answer.images if sha not in state.blobs]
            assert not lost, f"{where} {answer.call.request_id} answered blobs not stored: {lost}"
        self.tally.reservations_open_at_kill += len(state.reservations)
        self.tally.stray_blob_files = state.stray_files
        self.tally.settled_rows = len(self.settled)
        self.tally.entries_at_last_kill = len(state.entries)
        self.tally.blobs_at_last_kill = len(state.blobs)
        return state

    async def _check_restarted(
        self,
        gateway: GatewayProcess,
        run: int,
        answers: list[Answer],
        state: DiskState,
        orphans_before: int,
    ) -> None:
        where = self.where(run)
        assert open_reservations(self.data) == 0, f"{where} a reservation survived the restart"
        orphans = orphan_rows(self.data, set(state.reservations)) - orphans_before
        assert orphans in (0, len(state.reservations)), f"{where} {orphans} orphan rows"
        self.tally.orphan_rows += orphans
        async with openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key=SECRET, max_retries=0, timeout=60
        ) as client:
            for answer in answers:
                again = await send(
                    client,
                    answer.call,
                    response_format="b64_json",
                    headers={"Cache-Control": "only-if-cached"},
                )
                assert (again.status, again.cache) == (200, "HIT"), f"{where} {again}"
                assert again.images == answer.images, f"{where} {answer.call} changed images"
                self.tally.replays += 1
        await self._check_served(gateway.root, where, state.blobs)

    async def _check_served(self, root: str, where: str, blobs: dict[str, str]) -> None:
        """Every blob on disk not fetched yet: `GET /images/<sha>.<ext>` hashes to sha."""
        for sha, fmt in blobs.items():
            if sha in self.served:
                continue
            got = await self.http.get(f"{root}/images/{sha}.{EXTS[fmt]}")
            assert got.status_code == 200, f"{where} /images/{sha}: {got.status_code}"
            assert hashlib.sha256(got.content).hexdigest() == sha, f"{where} {sha} served torn"
            self.served.add(sha)
            self.tally.blobs_served += 1
