"""Reservation owners: which process holds a budget reservation, and whether it still runs.

An owner is "host:pid:start" (`process_owner`). On this host the answer is exact: the pid
runs and started at the same clock tick, or it is gone. On another host we cannot look, so
the ledger falls back to the owner's heartbeat (`SqliteLedger.heartbeat`) and its lease.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Literal

__all__ = ["OwnerState", "owner_alive", "owner_state", "process_owner"]

OwnerState = Literal["alive", "dead", "unknown"]


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat),
    or None when there is no such running process (gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just isn't ours
    return True


def process_owner() -> str:
    """This process as a reservation owner: "host:pid:start", start from /proc ("-" if none).

    Computed per pid, so a forked child never reuses its parent's identity."""
    return _owner_of(os.getpid())


@functools.cache
def _owner_of(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or '-'}"


def owner_state(owner: str) -> OwnerState:
    """Is the process that wrote `owner` (see `process_owner`) still running? "unknown" for
    an owner on another host. The start time tells a reused pid from the original process."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return "unknown"
    if not pid_text.isdigit():
        return "dead"  # not written by `process_owner`
    pid = int(pid_text)
    if start == "-" or not Path("/proc/self/stat").exists():
        return "alive" if _pid_running(pid) else "dead"
    return "alive" if _proc_start(pid) == start else "dead"


def owner_alive(owner: str) -> bool:
    """True unless the owner is known to be gone (another host's owner counts as alive)."""
    return owner_state(owner) != "dead"
