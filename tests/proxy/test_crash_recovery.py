"""kill -9 in the middle of a burst: settled spend survives; the calls in flight, which the
upstream may have billed, are settled at their quotes as orphaned rows at the restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import openai

from tests.fakes.replicate_server import FakeReplicate

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-crash-test-0123456789"


async def start_gateway(
    config: Path, env: dict[str, str], workers: int = 1
) -> tuple[asyncio.subprocess.Process, str]:
    with (config.parent / "gateway.stderr").open("ab") as log:  # the child keeps its own fd
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--workers",
            str(workers),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
        )
    assert proc.stdout is not None
    try:  # generous: a loaded CI machine starts spawned workers slowly
        line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"no base URL line; stderr: {_tail(config)}") from None
    match = re.search(r"(http://\S+/v1)", line)
    assert match, f"{line!r}; stderr: {_tail(config)}"
    return proc, match[1]


def _tail(config: Path) -> str:
    return (config.parent / "gateway.stderr").read_text(errors="replace")[-3000:]


async def test_kill_9_during_a_burst_loses_no_call_from_the_books(tmp_path):
    async with FakeReplicate(work_seconds=0.4) as rep:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
            f'[providers.replicate]\napi_token = "r8_test"\nbase_url = "{rep.base_url}"\n'
            f'[[keys]]\nname = "app"\nkey = "{SECRET}"\nbudget_usd = 10.0\n'
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IMAGEGATE_", "OPENAI_", "REPLICATE_"))
        }
        env["PYTHONPATH"] = str(ROOT)
        proc, base_url = await start_gateway(config, env)
        client = openai.AsyncOpenAI(base_url=base_url, api_key=SECRET, max_retries=0)

        def burst(first: int, count: int) -> list[asyncio.Task]:
            return [
                asyncio.create_task(
                    client.images.with_raw_response.generate(
                        model="flux-schnell", prompt=f"crash {i}", size="1024x1024"
                    )
                )
                for i in range(first, first + count)
            ]

        await asyncio.gather(*burst(0, 5))  # five settled generations
        rep.delay_next(60, times=35, path="/predictions", method="POST")
        in_flight = burst(5, 35)
        while len(rep.requests_to("/predictions", "POST")) < 40:
            await asyncio.sleep(0.02)  # every call has reserved its budget and reached upstream
        proc.send_signal(signal.SIGKILL)  # mid-burst
        await proc.wait()
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        succeeded = 5 + sum(1 for r in results if not isinstance(r, BaseException))
        await client.close()

        ledger = tmp_path / "data" / "ledger.sqlite3"
        db = sqlite3.connect(ledger)
        rows, spent = db.execute("SELECT COUNT(*), SUM(cost_micros) FROM ledger").fetchone()
        open_before = db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
        db.close()
        assert rows >= succeeded >= 5  # every answered generation was settled first
        assert spent == rows * 3_000  # each settled row is one $0.003 image, exact
        assert open_before > 0  # the kill left reservations of calls that no longer exist

        proc, base_url = await start_gateway(config, env)  # restart: orphans settled
        try:
            async with openai.AsyncOpenAI(
                base_url=base_url, api_key=SECRET, max_retries=0
            ) as again:
                await again.images.generate(
                    model="flux-schnell", prompt="crash 0", size="1024x1024"
                )
            db = sqlite3.connect(ledger)
            assert db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
            orphans = db.execute(
                "SELECT COUNT(*), SUM(cost_micros), COUNT(DISTINCT request_id) FROM ledger "
                "WHERE cache = 'ORPHANED' AND model = 'flux-schnell' AND key_name = 'app'"
            ).fetchone()
            assert orphans == (open_before, open_before * 3_000, open_before)  # at the quote
            charged = db.execute(
                "SELECT COUNT(*), SUM(cost_micros) FROM ledger WHERE cost_micros > 0"
            ).fetchone()
            # Every call the upstream served is on the books: settled, or orphaned.
            assert charged == (rows + open_before, spent + open_before * 3_000)
            assert charged[0] == len(rep.requests_to("/predictions", "POST")) == 40
            spend_row = db.execute(
                "SELECT micros FROM spend WHERE scope = 'key' AND name = 'app' AND win = 'total'"
            ).fetchone()
            assert spend_row == (charged[1],)  # the budget counts them too
            db.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
