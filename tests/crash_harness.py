"""What the crash loops share: a real gateway process, a repeatable request mix, and the checks.

The gateway runs as `python -m proxy serve` in its own session (so `--workers N` and its
children form one process group), in front of a `FakeOpenAI` that runs in the test's loop.
Requests go through the official openai SDK (`max_retries=0`), each with its own
`X-Request-Id`, which the gateway writes into the ledger row it settles.

The checks read the data directory only while no gateway runs (between the kill and the
restart), with plain sqlite3 and file reads: nothing is healed or rewritten by looking.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai

from tests.fakes.images import make_png, sniff_format

__all__ = [
    "Answer",
    "Call",
    "DiskState",
    "GatewayProcess",
    "clean_env",
    "group_members",
    "make_mix",
    "open_reservations",
    "orphan_rows",
    "read_disk",
    "send",
    "write_config",
]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-crash-loops-0123456789"
EXTS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_", "FAL_"))
    }
    return {**env, "PYTHONPATH": str(ROOT)}


def write_config(directory: Path, upstream: str, *, max_bytes: int | None = None) -> Path:
    """A gateway config: its data dir, the fake OpenAI upstream, one key with a budget (so
    every miss reserves), and dall-e-2 served as itself (256x256 images are cheap to make)."""
    config = directory / "gateway.toml"
    cache = f"[cache]\nmax_bytes = {max_bytes}\n" if max_bytes is not None else ""
    config.write_text(
        f'[storage]\ndata_dir = "{directory / "data"}"\n{cache}'
        '[logging]\nlevel = "warning"\n'
        f'[providers.openai]\napi_key = "sk-test"\nbase_url = "{upstream}"\n'
        '[models."dall-e-2"]\nretired = false\n'
        f'[[keys]]\nname = "crash"\nkey = "{SECRET}"\nbudget_usd = 100000.0\n'
    )
    return config


# -- the process -------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    proc: asyncio.subprocess.Process
    base_url: str  # http://127.0.0.1:<port>/v1
    log: Path

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    @classmethod
    async def start(cls, config: Path, *, workers: int = 1) -> GatewayProcess:
        log = config.parent / "gateway.stderr"
        with log.open("ab") as err:  # the child keeps its own fd
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "proxy", "serve", "--config", str(config)),
                *("--port", "0", "--workers", str(workers)),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=clean_env(),
                start_new_session=True,  # its own process group: workers included
            )
        assert proc.stdout is not None
        try:  # generous: a loaded machine starts spawned workers slowly
            line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no base URL line; stderr: {tail(log)}") from None
        found = re.search(r"(http://\S+/v1)", line)
        assert found, f"{line!r}; stderr: {tail(log)}"
        return cls(proc, found[1], log)

    async def kill9(self) -> None:
        """SIGKILL the whole process group (the supervisor and every worker at once), then
        wait until none of them runs any more (zombies count as gone)."""
        pgid = self.proc.pid
        os.killpg(pgid, signal.SIGKILL)
        await self.proc.wait()
        deadline = time.monotonic() + 30
        while group_members(pgid):
            assert time.monotonic() < deadline, f"group {pgid} survived SIGKILL"
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await self.proc.wait()


def group_members(pgid: int) -> list[int]:
    """Running (non-zombie) processes of process group `pgid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


# -- the request mix ---------------------------------------------------------------------

EDIT_INPUT = make_png(64, 64, (30, 120, 200, 255), alpha=True)  # square RGBA: dall-e-2 takes it


@dataclass(frozen=True)
class Call:
    """One request of the mix; `request_id` is sent as X-Request-Id."""

    request_id: str
    kind: str  # "generate" | "edit"
    model: str
    prompt: str
    n: int
    size: str
    response_format: str  # "b64_json" | "url"

    def params(self, response_format: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "n": self.n,
            "size": self.size,
            "response_format": response_format or self.response_format,
        }
        if self.kind == "edit":
            params["image"] = ("in.png", EDIT_INPUT, "image/png")
        if self.model.startswith("gpt-image"):
            params["quality"] = "low"
        return params


def make_mix(rng: random.Random, run: int, count: int) -> list[Call]:
    """`count` calls: generations and edits, n from 1 to 3, b64 and url answers, a few at
    1024x1024 on a GPT image model. Prompts come from a pool that overlaps the previous
    run's, so some calls are misses, some coalesce in flight and some are hits."""
    calls = []
    for i in range(count):
        topic = rng.randrange(max(0, run - 1) * 12, run * 12 + 24)
        kind = "edit" if rng.random() < 0.2 else "generate"
        gpt = rng.random() < 0.1
        calls.append(
            Call(
                request_id=f"crash-r{run:03d}-{i:04d}",
                kind=kind,
                model="gpt-image-1-mini" if gpt else "dall-e-2",
                prompt=f"crash loop topic {topic}",
                n=rng.choice((1, 1, 1, 2, 3)),
                size="1024x1024" if gpt else "256x256",
                response_format=rng.choice(("b64_json", "url")),
            )
        )
    return calls


@dataclass
class Answer:
    """What the client got back for one call before the kill."""

    call: Call
    status: int  # 0: no answer (the connection died)
    cache: str = ""
    cost_micros: int = 0
    images: list[str] = field(default_factory=list)  # sha256 of each image, in order
    urls: list[str] = field(default_factory=list)  # the image URLs of a url answer
    error: str = ""


def image_shas(body: dict[str, Any]) -> list[str]:
    """sha256 of each image of an Images API answer: from b64_json, or from the /images URL."""
    shas = []
    for item in body["data"]:
        if item.get("b64_json"):
            shas.append(hashlib.sha256(base64.b64decode(item["b64_json"])).hexdigest())
        else:
            found = re.search(r"/images/([0-9a-f]{64})\.", item["url"])
            assert found, item["url"]
            shas.append(found[1])
    return shas


async def send(
    client: openai.AsyncOpenAI,
    call: Call,
    *,
    response_format: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    api = client.images.with_raw_response
    extra_headers = {"X-Request-Id": call.request_id, **(headers or {})}
    params = call.params(response_format)
    try:
        if call.kind == "edit":
            raw = await api.edit(**params, extra_headers=extra_headers)
        else:
            raw = await api.generate(**params, extra_headers=extra_headers)
    except openai.APIStatusError as exc:
        return Answer(call, exc.status_code, error=str(exc)[:300])
    except openai.APIConnectionError as exc:
        return Answer(call, 0, error=repr(exc))
    cost = Decimal(raw.headers.get("x-imagegate-cost-usd", "0")) * 1_000_000
    body = json.loads(raw.content)
    return Answer(
        call,
        raw.status_code,
        cache=raw.headers.get("x-cache", ""),
        cost_micros=int(cost),
        images=image_shas(body),
        urls=[item["url"] for item in body["data"] if item.get("url")],
    )


# -- what is on disk ---------------------------------------------------------------------


@dataclass(frozen=True)
class DiskState:
    entries: dict[str, dict[str, object]]  # "<request key>/<index>" -> entry JSON
    blobs: dict[str, str]  # sha256 -> format of its bytes
    ledger: dict[str, int]  # request_id -> settled micro-USD (rows with cost > 0)
    reservations: dict[str, int]  # open reservation id -> amount
    stray_files: int  # blob files no index row names (written, then the process died)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_disk(data: Path) -> DiskState:
    """Everything the checks need from a data dir no gateway is using. Raises (naming what)
    when an entry does not parse or a blob's bytes do not hash to its address."""
    blobs: dict[str, str] = {}
    db = _connect(data / "blobs" / "cache.db")
    named = set()
    for sha, filename in db.execute("SELECT key, filename FROM Cache WHERE raw = 1"):
        named.add(filename)
        body = (data / "blobs" / filename).read_bytes()
        assert hashlib.sha256(body).hexdigest() == sha, f"blob {sha} torn on disk"
        fmt = sniff_format(body)
        assert fmt in EXTS, f"blob {sha} is not an image ({body[:8]!r})"
        blobs[sha] = fmt
    db.close()
    files = {
        str(path.relative_to(data / "blobs"))
        for path in (data / "blobs").glob("*/*/*")
        if path.is_file()
    }
    entries: dict[str, dict[str, object]] = {}
    db = _connect(data / "entries" / "cache.db")
    for key, value in db.execute("SELECT key, value FROM Cache WHERE raw = 1"):
        if not key.startswith("__"):
            entry = json.loads(value)
            assert re.fullmatch(r"[0-9a-f]{64}", entry["blob"]), (key, entry)
            entries[key] = entry
    db.close()
    db = _connect(data / "ledger.sqlite3")
    ledger = dict(
        db.execute(
            "SELECT request_id, SUM(cost_micros) FROM ledger "
            "WHERE cost_micros > 0 AND request_id IS NOT NULL GROUP BY request_id"
        )
    )
    reservations = dict(db.execute("SELECT id, amount_micros FROM reservations"))
    db.close()
    return DiskState(entries, blobs, ledger, reservations, len(files - named))


def orphan_rows(data: Path, reservation_ids: set[str]) -> int:
    """Ledger rows that settle a reservation left by a dead process (the `orphaned` rule):
    rows naming one of those reservations, or rows marked orphaned."""
    db = _connect(data / "ledger.sqlite3")
    columns = {row[1] for row in db.execute("PRAGMA table_info(ledger)")}
    marks = [f"lower({c}) = 'orphaned'" for c in ("cache", "outcome") if c in columns]
    ids = list(reservation_ids)
    named = f"reservation IN ({', '.join('?' * len(ids))})" if ids else "0"
    sql = f"SELECT COUNT(*) FROM ledger WHERE {named} OR {' OR '.join(marks)}"  # noqa: S608
    count = int(db.execute(sql, ids).fetchone()[0])
    db.close()
    return count


def open_reservations(data: Path) -> int:
    db = _connect(data / "ledger.sqlite3")
    count = int(db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0])
    db.close()
    return count
