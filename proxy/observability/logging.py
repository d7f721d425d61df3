"""structlog set-up: JSON lines in production, readable lines on a terminal.

Loggers are cached on first use and JSON is rendered by orjson straight to bytes: the gateway
writes one line per request, so a line must cost microseconds (measured in bench/)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    binary = getattr(out, "buffer", None)
    renderer: structlog.typing.Processor
    factory: structlog.PrintLoggerFactory | structlog.BytesLoggerFactory
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        factory = structlog.PrintLoggerFactory(out)
    elif binary is not None:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(binary)
    else:  # a text-only stream (io.StringIO): str lines
        renderer = structlog.processors.JSONRenderer(serializer=_dumps_str)
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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


def _dumps_str(value: object, **kw: object) -> str:
    return orjson.dumps(value, **kw).decode()  # type: ignore[arg-type]
