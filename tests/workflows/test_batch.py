"""`imagegate batch` as a user runs it: a real process, a real gateway, kill -9 and resume."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import httpx2
import openai
import pytest

from policies.errors import ProviderUnavailable
from proxy.ports import ProviderCall, ProviderResult
from proxy.workflows.batch_input import InputError, read_lines
from proxy.workflows.gateway import retry_delay, root_url
from proxy.workflows.manifest import Journal, image_filename, slugify
from proxy.workflows.runner import SpendCap
from tests.conftest import CountingProvider, start_gateway

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"model": "dall-e-2", "size": "256x256", "n": 1}


@dataclass
class PricedProvider(CountingProvider):
    """The counting placeholder, charging `micros` per image."""

    micros: int = 40_000

    async def generate(self, call: ProviderCall) -> ProviderResult:
        result = await super().generate(call)
        return replace(result, cost_micros=self.micros * len(call.indexes))


@dataclass
class HoldsAfter(CountingProvider):
    """Answers the first `free` calls at once; later ones wait for `release`."""

    free: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, call: ProviderCall) -> ProviderResult:
        self.calls.append(call)
        if len(self.calls) > self.free:
            await self.release.wait()
        return await self.inner.generate(call)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def environment() -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
    }
    return {**clean, "PYTHONPATH": str(ROOT)}


async def start_batch(cwd: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "batch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
        cwd=cwd,
    )


async def batch(cwd: Path, *args: str) -> Run:
    proc = await start_batch(cwd, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    run = Run(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in run.stderr, run.stderr
    return run


def write_jsonl(path: Path, rows: list[dict[str, object] | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path) -> list[dict[str, object]]:
    value = json.loads(path.read_text())
    assert isinstance(value, list)
    return value


def check_manifest(out: Path) -> list[dict[str, object]]:
    """Every record's file exists and hashes to its sha256; no image file is unrecorded."""
    records = load(out / "manifest.json")
    for record in records:
        data = (out / str(record["file"])).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"], record["file"]
    images = {p.name for p in out.iterdir() if p.suffix in (".png", ".jpg", ".webp")}
    assert images == {record["file"] for record in records}
    return records


def journal_text(out: Path) -> str:
    try:
        return (out / ".batch-journal.jsonl").read_text()
    except FileNotFoundError:
        return ""


def journal_lines(out: Path) -> int:
    return len(journal_text(out).splitlines())


def distinct_requests(provider: CountingProvider) -> set[tuple[str, tuple[int, ...]]]:
    return {(repr(call.request), call.indexes) for call in provider.calls}


# ---------------------------------------------------------------- end to end, real processes


async def test_200_line_batch_retries_transient_failures_and_reports_the_bad_lines(
    settings, clock, tmp_path
):
    provider = CountingProvider()
    provider.fail_next = [ProviderUnavailable("upstream hiccup") for _ in range(6)]
    gw = await start_gateway(settings, provider, clock)
    bad = {17: {"size": "300x300"}, 58: {"size": "300x300"}, 33: {"model": "dall-e-9"}}
    bad |= {150: {"model": "dall-e-9"}, 101: {"size": "1024x1536"}}
    rows: list[dict[str, object] | str] = []
    for line in range(1, 201):
        row: dict[str, object] = {**SMALL, "prompt": f"asset {line}", "tags": ["bulk"]}
        rows.append("{not json" if line == 77 else {**row, **bad.get(line, {})})
    source = write_jsonl(tmp_path / "assets.jsonl", rows)
    try:
        run = await batch(tmp_path, str(source), "--base-url", gw.root, "--concurrency", "8")
    finally:
        await gw.close()
    assert run.code == 1, run.stderr
    out = tmp_path / "batch-out"
    failures = {f["line"]: f for f in load(out / "failures.json")}
    assert set(failures) == {17, 33, 58, 77, 101, 150}
    assert {failures[n]["status"] for n in (17, 58, 101)} == {400}
    assert {failures[n]["status"] for n in (33, 150)} == {404}
    assert failures[77]["status"] is None and "invalid JSON" in str(failures[77]["error"])
    assert "dall-e-9" in str(failures[33]["error"]) and failures[33]["attempts"] == 1
    assert "300x300" in str(failures[17]["error"])
    records = check_manifest(out)
    assert [r["line"] for r in records] == [n for n in range(1, 201) if n not in failures]
    assert sum(r["attempts"] == 2 for r in records) == 6  # each hiccup retried once
    assert len(provider.calls) == 194 + 6  # bad lines never reached the provider
    first = records[0]
    assert first["file"] == "0001-asset-1.png" and first["prompt"] == "asset 1"
    assert (first["model"], first["provider"], first["size"]) == (
        "gpt-image-1-mini",  # dall-e-2's successor, drawn offline by the placeholder
        "placeholder",
        "256x256",
    )
    assert first["cache"] == "MISS" and first["cost_usd"] == "0" and first["tags"] == ["bulk"]
    assert first["params"] == {**SMALL, "prompt": "asset 1", "response_format": "b64_json"}
    assert len(str(first["cache_key"])) == 64 and str(first["request_id"]).startswith("req_")
    assert str(first["timestamp"]).endswith("Z")
    assert "194 done" in run.stdout and "6 failed" in run.stdout
    assert "Invalid value for 'size'" in run.stderr  # the failure table, with the API's message


async def test_killed_halfway_it_resumes_without_generating_anything_twice(
    settings, clock, tmp_path
):
    provider = HoldsAfter(free=30)
    gw = await start_gateway(settings, provider, clock)
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"prompt number {n}\n" for n in range(1, 81)))
    args = [str(source), "--base-url", gw.base_url, "--model", "dall-e-2", "--size", "256x256"]
    out = tmp_path / "batch-out"
    try:
        proc = await start_batch(tmp_path, *args)
        deadline = time.monotonic() + 30
        while (journal_lines(out) < 30 or len(provider.calls) < 34) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert journal_lines(out) == 30 and len(provider.calls) == 34  # 4 held in flight
        proc.kill()
        assert await proc.wait() == -9
        journaled = {json.loads(raw)["line"] for raw in journal_text(out).splitlines()}
        with (out / ".batch-journal.jsonl").open("a") as journal:
            journal.write('{"line": 31, "digest": "ab')  # a torn last write
        provider.release.set()
        run = await batch(tmp_path, *args)
    finally:
        await gw.close()
    assert run.code == 0, run.stderr
    assert "30 resumed" in run.stdout and "50 done" in run.stdout
    records = check_manifest(out)
    assert [r["line"] for r in records] == list(range(1, 81))
    assert len(provider.calls) == 80 == len(distinct_requests(provider))
    # The 4 lines in flight at the kill (not always 31-34: calls race) were finished by the
    # gateway and served from it; every other line not journaled was generated now.
    rerun = [r for r in records if r["line"] not in journaled]
    assert sorted(r["cache"] for r in rerun).count("MISS") == 46
    assert {r["cache"] for r in rerun} <= {"MISS", "HIT", "COALESCED"}
    assert journal_lines(out) == 30 + 1 + 50  # the torn line stays, ignored


async def test_sigterm_stops_cleanly_with_the_manifest_written(settings, clock, tmp_path):
    provider = HoldsAfter(free=5)
    gw = await start_gateway(settings, provider, clock)
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"frame {n}\n" for n in range(1, 21)))
    out = tmp_path / "batch-out"
    try:
        proc = await start_batch(tmp_path, str(source), "--base-url", gw.root, "--size", "256x256",
                                 "--model", "dall-e-2")  # fmt: skip
        while journal_lines(out) < 5 or len(provider.calls) < 9:
            await asyncio.sleep(0.02)
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        provider.release.set()
        await gw.close()
    assert proc.returncode == 143 and b"run it again to resume" in err
    assert [r["line"] for r in check_manifest(out)] == sorted(
        json.loads(raw)["line"] for raw in journal_text(out).splitlines()
    )
    assert len(load(out / "manifest.json")) == 5 and load(out / "failures.json") == []


async def test_jsonl_csv_and_text_with_defaults_and_either_base_url(settings, clock, tmp_path):
    provider = CountingProvider()
    gw = await start_gateway(settings, provider, clock)
    jsonl = write_jsonl(
        tmp_path / "set.jsonl",
        [
            {"prompt": "Logo: OPEN", "name": "Café logo", "tags": ["logo", "v1"], "n": 2},
            {"prompt": "A fox", "model": "gpt-image-1-mini", "size": "1024x1024",
             "quality": "low", "output_format": "jpeg"},
        ],
    )  # fmt: skip
    csv_file = tmp_path / "set.csv"
    csv_file.write_text(
        'prompt,name,tags,size\n"A cat, sitting",cat,"pets, cats",\n\nA dog,,,512x512\n'
    )
    text = tmp_path / "set.prompts"
    text.write_text("# shot list\nA red kite\n\n  A blue kite  \n")
    defaults = ["--model", "dall-e-2", "--size", "256x256"]
    try:
        runs = await asyncio.gather(
            batch(tmp_path, str(jsonl), "--out", "j", "--base-url", gw.root, *defaults),
            batch(tmp_path, str(csv_file), "--out", "c", "--base-url", gw.base_url, *defaults),
            batch(tmp_path, str(text), "--out", "t", "--base-url", gw.base_url + "/", *defaults),
        )
    finally:
        await gw.close()
    assert [run.code for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    j, c, t = (check_manifest(tmp_path / d) for d in ("j", "c", "t"))
    assert [r["file"] for r in j] == [
        "0001-cafe-logo-0.png",
        "0001-cafe-logo-1.png",
        "0002-a-fox.jpg",
    ]
    assert j[0]["name"] == "Café logo" and j[0]["tags"] == ["logo", "v1"] and j[0]["index"] == 0
    assert (j[2]["model"], j[2]["size"], j[2]["quality"]) == (
        "gpt-image-1-mini",
        "1024x1024",
        "low",
    )
    assert [(r["line"], r["file"], r["size"]) for r in c] == [
        (2, "0002-cat.png", "256x256"),
        (4, "0004-a-dog.png", "512x512"),  # the line's own size wins over --size
    ]
    assert c[0]["tags"] == ["pets", "cats"] and c[0]["prompt"] == "A cat, sitting"
    assert [(r["line"], r["prompt"]) for r in t] == [(2, "A red kite"), (4, "A blue kite")]


async def test_budget_stops_scheduling_and_a_rerun_with_more_budget_finishes(
    settings, clock, tmp_path
):
    provider = PricedProvider(micros=40_000)  # within gpt-image-1.5's high quote ($0.133)
    gw = await start_gateway(settings, provider, clock, serves_as="openai")
    source = tmp_path / "ten.txt"
    source.write_text("".join(f"poster {n}\n" for n in range(10)))
    args = [str(source), "--base-url", gw.root, "--model", "gpt-image-1.5", "--quality", "high"]
    try:
        first = await batch(tmp_path, *args, "--budget-usd", "0.13")
        spent_first = [Decimal(str(r["cost_usd"])) for r in check_manifest(tmp_path / "batch-out")]
        second = await batch(tmp_path, *args, "--budget-usd", "1")
    finally:
        await gw.close()
    assert first.code == 3, first.stderr
    assert sum(spent_first) == Decimal("0.12") and len(spent_first) == 3
    assert "7 skipped" in first.stdout and "$0.12 spent" in first.stdout
    assert load(tmp_path / "batch-out" / "failures.json") == []  # skipped is not failed
    assert second.code == 0 and "3 resumed" in second.stdout and "$0.28 spent" in second.stdout
    records = check_manifest(tmp_path / "batch-out")
    assert sum(Decimal(str(r["cost_usd"])) for r in records) == Decimal("0.4")
    assert len(provider.calls) == 10


async def test_a_missing_file_is_a_usage_error(tmp_path):
    run = await batch(tmp_path, "missing.jsonl")
    assert run.code == 2 and "missing.jsonl: no such file" in run.stderr
    assert not (tmp_path / "batch-out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-prompt.csv"], "no 'prompt' column"),
        (["ok.txt", "--format", "yaml"], "invalid choice"),
        (["ok.txt", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["ok.txt", "--retries", "-1"], "--retries: must be 0 or more"),
        (["ok.txt", "--base-url", "ftp://example.com"], "http(s) URL"),
        (["ok.txt", "--budget-usd", "lots"], "not an amount of dollars"),
        (["ok.txt", "--budget-usd", "0.0000001"], "finer than a micro-dollar"),
        (["ok.txt", "--n", "two"], "not an integer"),
    ],
)
def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from proxy.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "no-prompt.csv").write_text("name,size\na,256x256\n")
    (tmp_path / "ok.txt").write_text("a prompt\n")
    try:
        code = main(["batch", *args])
    except SystemExit as exc:  # argparse rejects bad option values itself
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_dead_gateway_stops_the_batch_after_one_lines_retries(tmp_path):
    (tmp_path / "thirty.txt").write_text("".join(f"kite {n}\n" for n in range(30)))
    url = f"http://127.0.0.1:{closed_port()}"
    run = await batch(tmp_path, "thirty.txt", "--base-url", url, "--retries", "1")
    assert run.code == 4, run.stdout + run.stderr
    failures = load(tmp_path / "batch-out" / "failures.json")
    # one line tried (1 attempt + 1 retry), not 30 lines x 2 attempts
    assert [(f["line"], f["attempts"], f["status"], f["code"]) for f in failures] == [
        (1, 2, None, "connection_error")
    ]
    err = " ".join(run.stderr.split())
    assert f"stopped: cannot reach the gateway at {url} after 2 attempt(s)" in err
    assert "29 line(s) not run, from line 2, left for a re-run" in err
    assert "0 done (0 cached) · 1 failed · 29 skipped" in run.stdout


async def keyed_gateway(settings, clock):
    from proxy.config_cost import parse_cost

    keys = {"keys": [{"name": "batch", "key": "sk-batch-good-0123456789"}]}
    provider = CountingProvider()
    gw = await start_gateway(replace(settings, cost=parse_cost(keys)), provider, clock)
    return gw, provider


async def test_no_api_key_stops_at_the_first_401_and_says_no_key_was_given(
    settings, clock, tmp_path
):
    gw, provider = await keyed_gateway(settings, clock)
    root = gw.root
    (tmp_path / "thirty.txt").write_text("".join(f"kite {n}\n" for n in range(30)))
    try:
        run = await batch(tmp_path, "thirty.txt", "--base-url", gw.root, "--concurrency", "8")
    finally:
        await gw.close()
    assert run.code == 4, run.stdout + run.stderr
    failures = load(tmp_path / "batch-out" / "failures.json")
    assert [(f["line"], f["status"]) for f in failures] == [(1, 401)]
    assert "You didn't provide an API key" in str(failures[0]["error"])  # none was sent
    err = " ".join(run.stderr.split())
    assert f"stopped: no API key given, and the gateway at {root} wants one" in err
    assert "--api-key KEY or set $OPENAI_API_KEY" in err
    assert "Incorrect API key" not in err
    assert "29 skipped" in run.stdout and provider.calls == []


async def test_a_refused_api_key_stops_the_batch(settings, clock, tmp_path):
    gw, provider = await keyed_gateway(settings, clock)
    root = gw.root
    (tmp_path / "ten.txt").write_text("".join(f"kite {n}\n" for n in range(10)))
    try:
        run = await batch(tmp_path, "ten.txt", "--base-url", gw.root, "--api-key", "sk-wrong")
    finally:
        await gw.close()
    assert run.code == 4, run.stdout + run.stderr
    assert [f["status"] for f in load(tmp_path / "batch-out" / "failures.json")] == [401]
    err = " ".join(run.stderr.split())
    assert f"stopped: the gateway at {root} refused the API key (401: Incorrect API key" in err
    assert "9 skipped" in run.stdout and provider.calls == []


# ---------------------------------------------------------------- the pieces, in process


@pytest.mark.parametrize(
    "given",
    ["http://h:8080", "http://h:8080/", "http://h:8080/v1", "http://h:8080/v1/", " http://h:8080 "],
)
def test_base_url_with_or_without_v1(given):
    assert root_url(given) == "http://h:8080"


def test_names_are_readable_stable_and_safe():
    assert slugify("Café  Logo: OPEN!") == "cafe-logo-open"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("🙂") == "image"
    assert len(slugify("word " * 40)) <= 48
    assert image_filename(7, "A paper crane", 0, 1, "png") == "0007-a-paper-crane.png"
    assert image_filename(12345, "x", 2, 3, "webp") == "12345-x-2.webp"


def test_budget_reserves_in_flight_lines():
    budget = SpendCap(130_000)
    assert budget.admits(1)
    budget.reserved = 1
    assert not budget.admits(1)  # one at a time until a price is known
    budget.reserved = 0
    budget.charge(40_000, 1)
    assert budget.admits(2) and not budget.admits(3)
    assert SpendCap(None).admits(100)


def _status_error(
    status: int, headers: dict[str, str], body: dict[str, object]
) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://gw/v1/images/generations")
    response = httpx2.Response(status, headers=headers, json={"error": body}, request=request)
    classes = {400: openai.BadRequestError, 429: openai.RateLimitError}
    cls = classes.get(status, openai.InternalServerError)
    return cls("boom", response=response, body=body)


@pytest.mark.parametrize(
    ("status", "headers", "body", "retried"),
    [
        (400, {}, {"code": "invalid_value"}, False),
        (404, {}, {"code": "model_not_found"}, False),
        (401, {}, {"code": "invalid_api_key"}, False),
        (429, {}, {"code": "insufficient_quota", "type": "insufficient_quota"}, False),
        (429, {"x-should-retry": "false"}, {"code": "rate_limit_exceeded"}, False),
        (429, {}, {"code": "rate_limit_exceeded"}, True),
        (500, {}, {"code": None}, True),
        (503, {}, {"code": "upstream_unavailable"}, True),
    ],
)
def test_only_retryable_failures_are_retried(status, headers, body, retried):
    delay = retry_delay(_status_error(status, headers, body), 0, random.Random(1))
    assert (delay is not None) == retried
    if delay is not None:
        assert 0.25 <= delay <= 0.5


def test_retry_after_is_honoured_and_backoff_grows():
    rng = random.Random(1)
    assert retry_delay(_status_error(429, {"retry-after": "3"}, {}), 0, rng) == 3.0
    assert retry_delay(_status_error(429, {"retry-after-ms": "1500"}, {}), 0, rng) == 1.5
    assert 2.0 <= retry_delay(_status_error(503, {}, {}), 3, rng) <= 4.0  # type: ignore[operator]
    connection = openai.APIConnectionError(request=httpx2.Request("POST", "http://gw"))
    assert retry_delay(connection, 0, rng) is not None


def test_malformed_lines_are_reported_not_raised(tmp_path):
    source = write_jsonl(
        tmp_path / "x.jsonl",
        ["{bad", "[1]", {"model": "dall-e-2"}, {"prompt": 5}, {"prompt": "ok", "tags": 3}, ""],
    )
    problems = [(line.line, line.problem) for line in read_lines(source, "jsonl", {})]
    assert [n for n, _ in problems] == [1, 2, 3, 4, 5]
    assert all(problem for _, problem in problems)
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("prompt,n\na,2\nb,two\nc,1,extra\n")
    lines = read_lines(bad_csv, "csv", {"n": 1, "model": "dall-e-2"})
    assert [(line.line, line.problem is None, line.n) for line in lines] == [
        (2, True, 2),
        (3, False, 1),
        (4, False, 1),
    ]
    with pytest.raises(InputError, match="no such file"):
        read_lines(tmp_path / "nope.txt", "text", {})


def test_journal_ignores_a_torn_line_and_keeps_appending(tmp_path):
    from proxy.workflows.manifest import JournalEntry

    journal = Journal(tmp_path / "j.jsonl")
    journal.append(JournalEntry(1, "d1", ({"file": "a.png"},)))
    with journal.path.open("a") as handle:
        handle.write('{"line": 2, "dig')
    journal.append(JournalEntry(3, "d3", ()))
    assert sorted(journal.load()) == [1, 3]


def test_one_batch_at_a_time_per_directory(tmp_path):
    from proxy.workflows.manifest import DirectoryBusy, hold_directory

    with hold_directory(tmp_path):
        with pytest.raises(DirectoryBusy, match="another batch"):
            with hold_directory(tmp_path):
                pass
    with hold_directory(tmp_path):  # released when the first one ended
        pass


async def test_the_gateways_budget_stops_the_batch_instead_of_failing_every_line(
    settings, clock, tmp_path
):
    from proxy.config_cost import parse_cost
    from tests.conftest import PricedProvider as CatalogPriced

    secret = "sk-batch-quota-0123456789"
    settings = replace(
        settings, cost=parse_cost({"keys": [{"name": "batch", "key": secret, "budget_usd": 0.009}]})
    )
    gw = await start_gateway(settings, CatalogPriced(), clock, serves_as="replicate")
    source = tmp_path / "ten.txt"
    source.write_text("".join(f"kite {n}\n" for n in range(10)))
    try:
        run = await batch(
            tmp_path,
            str(source),
            "--base-url",
            gw.root,
            "--api-key",
            secret,
            "--model",
            "flux-schnell",
            "--size",
            "256x256",
            "--concurrency",
            "1",
        )
    finally:
        await gw.close()
    assert run.code == 3, run.stdout + run.stderr
    assert len(check_manifest(tmp_path / "batch-out")) == 3  # $0.009 buys three at $0.003
    failures = load(tmp_path / "batch-out" / "failures.json")
    assert [f["code"] for f in failures] == ["insufficient_quota"]
    assert "6 skipped" in run.stdout and "insufficient_quota" in run.stderr


async def test_the_failure_table_shows_the_gateways_message_whole(settings, clock, tmp_path):
    """The gateway names a config table, `[policy]`: rich must print it, not eat it as a tag."""
    from proxy.config_cost import parse_cost

    cost = parse_cost({"policy": {"deny_patterns": ["(?i)forbidden"]}})
    gw = await start_gateway(replace(settings, cost=cost), CountingProvider(), clock)
    (tmp_path / "two.txt").write_text("a kite\na forbidden [bold] kite\n")
    try:
        run = await batch(tmp_path, "two.txt", "--base-url", gw.root, "--model", "dall-e-2")
    finally:
        await gw.close()
    assert run.code == 1, run.stdout + run.stderr
    (failure,) = load(tmp_path / "batch-out" / "failures.json")
    assert "[policy] deny_patterns" in str(failure["error"])
    table = [line.split("│") for line in run.stderr.splitlines() if line.startswith("│")]
    errors = " ".join(" ".join(cells[-2].split()) for cells in table)
    assert "the operator's [policy] deny_patterns matched it." in errors, run.stderr
