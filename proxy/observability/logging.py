"""structlog set-up: JSON lines in production, readable lines on a terminal.

The gateway writes one line per request, so a line must cost microseconds (measured in
bench/): loggers are cached on first use, JSON is rendered by orjson straight to bytes, and
JSON lines are written out in batches, at least every `flush_ms` (like nginx's buffered
access log), at once for warnings and errors, and at exit. Every line carries the `pid` of
the process that wrote it (which worker, under `--workers`).

What other libraries log through the standard `logging` module (aiohttp's server, asyncio)
goes through the same pipeline: one JSON object per line, a traceback inside it as a string.
A malformed request from a client is a warning (`http.bad_request`), never a traceback."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import BinaryIO, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

__all__ = [
    "PID",
    "BatchedLines",
    "StdlibBridge",
    "configure_logging",
    "direct_lines",
    "info_line",
    "reset_logging",
    "timestamp_bytes",
]

_BATCH_BYTES = 64 * 1024  # the writer thread is woken when this much is waiting
_MAX_WAITING = 1024 * 1024  # past this, a request writes the lines itself (a stuck disk)
# Where `info_line` writes when lines are JSON in batches at info level; else None.
_direct: BatchedLines | None = None
_second: tuple[int, bytes] = (-1, b"")
PID = os.getpid()


class BatchedLines:
    """A structlog logger for byte lines: kept in memory until a daemon thread writes them
    out, every `flush_seconds` or as soon as 64 KiB have gathered; warnings and errors are
    written at once. A line is appended to a deque (thread-safe, no lock: a request pays
    ~0.15 µs) that the thread empties from the other end, so a slow disk never stalls a
    request; only when 1 MiB is waiting does a request write itself. The byte counts that
    time the wake-ups are kept by the appending side and the writing side each on their own
    (a line another thread adds at the same moment may go uncounted: a wake-up comes a
    little later, the timer's still comes)."""

    def __init__(self, out: BinaryIO, flush_seconds: float) -> None:
        self._out = out
        self._lines: deque[bytes] = deque()
        self._added = 0  # bytes appended so far
        self._woken = 0  # `_added` when the thread was last woken
        self._written = 0  # bytes taken out by `flush` so far
        self._writing = threading.Lock()  # one writer at a time, batches in order
        self._wake = threading.Event()
        self._interval = flush_seconds
        if flush_seconds > 0:
            threading.Thread(target=self._run, name="log-flush", daemon=True).start()
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        self._lines.append(message)
        added = self._added = self._added + len(message)
        if self._interval <= 0 or added - self._written >= _MAX_WAITING:
            self.flush()
        elif added - self._woken >= _BATCH_BYTES:
            self._woken = added
            self._wake.set()

    def urgent(self, message: bytes) -> None:
        self._lines.append(message)
        self._added += len(message)
        self.flush()

    log = debug = info = msg
    warn = warning = fatal = failure = err = error = critical = exception = urgent

    def flush(self) -> None:
        with self._writing:
            waiting, take = self._lines, self._lines.popleft
            lines = [take() for _ in range(len(waiting))]  # what is there now, in order
            if not lines:
                return
            self._written += sum(map(len, lines))
            try:
                self._out.write(b"\n".join(lines) + b"\n")
                self._out.flush()
            except (OSError, ValueError):  # a closed or full stream must not break a request
                pass

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()


def info_line(
    logger: structlog.typing.FilteringBoundLogger, event: str, fields: dict[str, object]
) -> None:
    """An info line with exactly the keys the JSON processors give it (`event`, `level`,
    `timestamp`; the caller passes what the context would add, e.g. `request_id`), rendered
    without running them: the request line of every hit costs ~3-4 µs of CPU instead of ~14
    (measured in bench/).
    On a terminal, or when info lines are off, it goes through `logger` as usual."""
    lines = _direct
    if lines is None:
        logger.info(event, **fields)
        return
    fields["event"] = event
    fields["pid"] = PID
    fields["level"] = "info"
    fields["timestamp"] = _timestamp()
    lines.msg(orjson.dumps(fields))


def direct_lines() -> BatchedLines | None:
    """Where `info_line` writes its lines itself (JSON in batches at info level), or None."""
    return _direct


def _timestamp() -> str:
    """What structlog's `TimeStamper(fmt="iso", utc=True)` writes, formatted once a second."""
    return timestamp_bytes().decode()


def timestamp_bytes() -> bytes:
    """`_timestamp()` as bytes: the second's text is kept, the microseconds are added."""
    global _second
    now = time.time_ns() // 1000
    second = now // 1_000_000
    if second != _second[0]:
        text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _second = (second, text.encode())
    return _second[1] + b"%06dZ" % (now % 1_000_000)


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    flush_ms: int = 250,
) -> None:
    global _direct
    _direct = None
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    binary = getattr(out, "buffer", None)
    renderer: structlog.typing.Processor
    factory: structlog.PrintLoggerFactory | Callable[..., BatchedLines]
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        factory = structlog.PrintLoggerFactory(out)
    elif binary is not None:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        lines = BatchedLines(binary, flush_ms / 1000)
        factory = lambda *_: lines  # noqa: E731 - one writer for every logger
        if logging.getLevelNamesMapping()[level.upper()] <= logging.INFO:
            _direct = lines
    else:  # a text-only stream (io.StringIO): str lines
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_str)
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_pid,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _bridge_stdlib(level)


def reset_logging() -> None:
    """structlog's defaults again, and the request line through them (not the batched
    writer): what a test that configured logging leaves for the next one."""
    global _direct
    _direct = None
    structlog.reset_defaults()


def _add_pid(
    _logger: object, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event["pid"] = PID
    return event


class StdlibBridge(logging.Handler):
    """Standard `logging` records (aiohttp, asyncio) -> structlog events, so they are
    rendered like every other line. aiohttp's "Error handling request" for a request it could
    not parse is the client's fault: a warning with the parser's reason, no traceback (and
    not the raw bytes, which may hold a header's secret)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            logger = structlog.get_logger(record.name)
            if isinstance(exc, HttpProcessingError):
                reason = (exc.message or "").split("\n", 1)[0].strip().rstrip(":")
                level = min(record.levelno, logging.WARNING)
                logger.log(level, "http.bad_request", status=exc.code, reason=reason[:200])
                return
            fields: dict[str, object] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def _bridge_stdlib(level: str) -> None:
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, StdlibBridge):
            root.removeHandler(handler)
    root.addHandler(StdlibBridge())
    # other libraries' warnings and errors only (httpx would add a line per upstream call)
    root.setLevel(max(logging.getLevelNamesMapping()[level.upper()], logging.WARNING))


def _dumps_str(value: object, **kw: object) -> str:
    return orjson.dumps(value, **kw).decode()  # type: ignore[arg-type]
