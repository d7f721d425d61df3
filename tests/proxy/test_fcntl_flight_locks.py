"""Single-flight locks across worker processes (`FcntlFlightLock`, proxy/stores/flight_locks.py).

POSIX record locks belong to a process, not a thread, so the kernel's deadlock detection sees
two workers that each hold one key's lock while another of their flights waits for a key the
other holds as a cycle, and fails the lock call with EDEADLK, although each lock will be
released by a flight that waits for nothing. Found by the --workers 2 crash loop: the request
answered 500 ("Resource deadlock avoided").
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from proxy.stores.flight_locks import FcntlFlightLock
from tests.crash_harness import ROOT

KEY_A = "a" * 64
KEY_B = "b" * 64

# The other worker: holds B, says so, then waits for A (held by the test), then lets go.
OTHER = """
import asyncio, sys
from pathlib import Path
from proxy.stores.flight_locks import FcntlFlightLock

async def main():
    locks = FcntlFlightLock(Path(sys.argv[1]))
    held = await locks.acquire(sys.argv[2])
    print("holding", flush=True)
    await locks.release(await locks.acquire(sys.argv[3]), landed=True)
    await locks.release(held, landed=True)

asyncio.run(main())
"""


def blocked_waiters(pid: int) -> int:
    """Lock requests of `pid` the kernel has queued behind another process's lock."""
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and f" {pid} " in line)


async def test_crossed_waits_of_two_processes_are_not_a_deadlock(tmp_path):
    path = tmp_path / "flights.lock"
    locks = FcntlFlightLock(path)
    other = None
    try:
        held = await locks.acquire(KEY_A)
        other = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", OTHER, str(path), KEY_B, KEY_A),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert other.stdout is not None
        assert await asyncio.wait_for(other.stdout.readline(), 60) == b"holding\n"
        while not blocked_waiters(other.pid):  # the other process now waits for A
            await asyncio.sleep(0.01)

        async def take_b() -> None:
            await locks.release(await locks.acquire(KEY_B), landed=True)

        second = asyncio.create_task(take_b())  # the kernel sees a cycle here
        await asyncio.wait({second}, timeout=1)  # EDEADLK, if it is raised, comes at once
        assert not second.done() or second.exception() is None
        await locks.release(held, landed=True)
        # A is released: the other process takes it, finishes, and lets B go.
        await asyncio.wait_for(second, 60)
        assert await asyncio.wait_for(other.wait(), 60) == 0
    finally:
        if other is not None and other.returncode is None:
            other.kill()
            await other.wait()
        locks.close()
