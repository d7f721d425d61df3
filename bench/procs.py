"""Child processes the bench starts, and stops whatever happens; RSS sampling from /proc.

Every child runs in its own session (so its whole tree, e.g. `imagegate serve --workers 2`
and its workers, is one process group) and gets SIGKILL from the kernel if the bench dies
(PR_SET_PDEATHSIG). `Procs.stop_all()` sends SIGTERM to each group it started, by id, waits,
then SIGKILLs what is left; `run.py` calls it from `finally`, on SIGINT and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = [
    "Child",
    "Procs",
    "RssSampler",
    "free_port",
    "system_busy_seconds",
    "tree_cpu_seconds",
    "tree_pids",
    "wait_http",
]

_TICK = os.sysconf("SC_CLK_TCK")

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Procs:
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            preexec_fn=_child_setup,
        )
        child = Child(name, proc, log_path, log)
        with self._lock:
            self.children.append(child)
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if it is still there."""
        pgid = child.pid  # setsid: the child leads its own group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=timeout)
        # Workers of a supervisor may outlive it for a moment: kill the whole group.
        deadline = time.monotonic() + 2.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=5)
        if child._log is not None:
            child._log.close()
            child._log = None
        with self._lock:
            if child in self.children:
                self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child, timeout=5.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_http(
    url: str, *, timeout: float = 60.0, child: Child | None = None, method: str = "GET"
) -> None:
    """Poll `url` until it answers (any status below 500); fail early if `child` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}) before answering; log tail:\n"
                + child.tail()
            )
        try:
            req = urllib.request.Request(url, method=method)  # noqa: S310 - loopback only
            with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = f"; log tail:\n{child.tail()}" if child is not None else ""
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s ({last}){tail}")


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2 :].split()
        parents.setdefault(int(rest[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, ()))
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def tree_cpu_seconds(roots: Sequence[int]) -> dict[int, float]:
    """CPU seconds of every live process in the trees of `roots`, by pid."""
    return {pid: _cpu_seconds(pid) for root in roots for pid in tree_pids(root)}


def system_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples the RSS of every process in some trees every `interval` s, in a thread,
    and measures the CPU time those trees used between enter and exit.

    `peak_per_process` is the largest RSS any one process of the trees reached (a worker),
    `peak_total` the largest sum over all of them at one sample; `cpu_seconds` the CPU the
    trees used; `system_busy` the CPU every process on the machine used meanwhile.
    """

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.peak_per_process = 0
        self.peak_total = 0
        self.start_per_process = 0  # the first sample: what the run started from
        self.cpu_seconds = 0.0
        self.system_busy = 0.0
        self.wall_seconds = 0.0
        self._cpu0: dict[int, float] = {}
        self._busy0 = 0.0
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._cpu0 = tree_cpu_seconds(self.roots)
        self._busy0 = system_busy_seconds()
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.wall_seconds = time.monotonic() - self._t0
        self.system_busy = system_busy_seconds() - self._busy0
        cpu1 = tree_cpu_seconds(self.roots)
        self.cpu_seconds = sum(max(0.0, v - self._cpu0.get(pid, 0.0)) for pid, v in cpu1.items())

    def _run(self) -> None:
        pids: list[int] = []
        refreshed = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - refreshed > 1.0:
                pids = [p for root in self.roots for p in tree_pids(root)]
                refreshed = now
            sizes = [s for s in (_rss_bytes(p) for p in pids) if s is not None]
            if sizes and not self.start_per_process:
                self.start_per_process = max(sizes)
            if sizes:
                self.peak_per_process = max(self.peak_per_process, max(sizes))
                self.peak_total = max(self.peak_total, sum(sizes))
            self._stop.wait(self.interval)
