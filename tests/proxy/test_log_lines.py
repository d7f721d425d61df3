"""JSON log lines: written in batches, at once for warnings, never lost at exit."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading

import pytest
import structlog

from proxy.observability.logging import (
    BatchedLines,
    configure_logging,
    info_line,
    reset_logging,
)
from proxy.observability.request_lines import RequestLines
from tests.proxy.test_crash_recovery import ROOT


class Recorder(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        super().flush()
        if self.getvalue():
            self.flushed.set()


def test_info_lines_wait_for_the_batch_and_warnings_go_at_once():
    out = Recorder()
    lines = BatchedLines(out, flush_seconds=3600)  # the timer will not fire in this test
    lines.info(b'{"event":"a"}')
    lines.info(b'{"event":"b"}')
    assert out.getvalue() == b""
    lines.warning(b'{"event":"c"}')
    assert out.getvalue().splitlines() == [b'{"event":"a"}', b'{"event":"b"}', b'{"event":"c"}']


def test_a_full_batch_wakes_the_writer_thread():
    out = Recorder()
    lines = BatchedLines(out, flush_seconds=3600)  # the timer will not fire in this test
    for i in range(1000):  # about 40 KiB: waits
        lines.info(b'{"event":"x","i":%d,"pad":"%s"}' % (i, b"p" * 40))
    assert out.getvalue() == b""
    for i in range(1000, 2000):  # past 64 KiB: the thread writes, not the caller
        lines.info(b'{"event":"x","i":%d,"pad":"%s"}' % (i, b"p" * 40))
    assert out.flushed.wait(5)
    lines.flush()
    written = out.getvalue().splitlines()
    assert [json.loads(line)["i"] for line in written] == list(range(2000))  # in order, once


def test_the_timer_writes_idle_lines():
    out = Recorder()
    lines = BatchedLines(out, flush_seconds=0.01)
    lines.info(b'{"event":"idle"}')
    assert out.flushed.wait(5)
    assert out.getvalue() == b'{"event":"idle"}\n'


def test_flush_ms_zero_writes_every_line():
    out = Recorder()
    lines = BatchedLines(out, flush_seconds=0)
    lines.info(b"{}")
    assert out.getvalue() == b"{}\n"


def test_lines_still_buffered_are_written_at_exit(tmp_path):
    script = (
        "from proxy.observability.logging import configure_logging\n"
        "import structlog\n"
        "configure_logging('info', 'json', flush_ms=60000)\n"
        "structlog.get_logger('t').info('last.words', n=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60, check=True
    )
    record = json.loads(done.stderr.decode().strip().splitlines()[-1])
    assert record["event"] == "last.words" and record["n"] == 1 and record["level"] == "info"


def test_a_text_stream_gets_json_lines_too():
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        structlog.get_logger("t").info("to.text", ok=True)
        assert json.loads(out.getvalue())["ok"] is True
    finally:
        reset_logging()


def test_the_request_line_has_the_keys_and_format_of_a_processed_line():
    out = Recorder()
    stream = io.TextIOWrapper(out)  # kept: a collected wrapper closes `out`
    configure_logging("info", "json", stream=stream, flush_ms=0)
    try:
        logger = structlog.get_logger("imagegate.http")
        structlog.contextvars.bind_contextvars(request_id="req_1")
        logger.info("http.request_completed", method="POST", status=200, ms=0.25)
        info_line(
            logger,
            "http.request_completed",
            {"method": "POST", "status": 200, "ms": 0.25, "request_id": "req_1"},
        )
        processed, direct = (json.loads(line) for line in out.getvalue().splitlines())
        assert processed.keys() == direct.keys()
        assert {**processed, "timestamp": ""} == {**direct, "timestamp": ""}
        stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
        assert stamp.fullmatch(direct["timestamp"])
        assert direct["timestamp"][:16] == processed["timestamp"][:16]  # same minute
    finally:
        structlog.contextvars.clear_contextvars()
        reset_logging()


def test_the_request_line_follows_the_level_and_the_console():
    out = Recorder()
    stream = io.TextIOWrapper(out)
    configure_logging("warning", "json", stream=stream, flush_ms=0)
    try:
        logger = structlog.get_logger("imagegate.http")
        info_line(logger, "http.request_completed", {"status": 200})
        assert out.getvalue() == b""  # info lines are off
        text = io.StringIO()
        configure_logging("info", "console", stream=text)
        info_line(structlog.get_logger("imagegate.http"), "http.request_completed", {"ms": 1})
        assert "http.request_completed" in text.getvalue() and "ms=1" in text.getvalue()
    finally:
        reset_logging()


@pytest.mark.parametrize(
    ("fields", "sample_rate"),
    [
        ({"key": "0123456789ab", "model": "m", "images": 2, "cost_usd": "0.011"}, None),
        ({"key": 'k\u00e9y "quoted"', "dry_run": True}, 0.1),
        ({}, None),
        ({"status": 999, "pid": 1}, None),  # keys of the line itself: structlog's own path
        ({"when": object()}, None),  # orjson refuses it either way
    ],
)
def test_the_joined_request_line_is_the_line_info_line_writes(monkeypatch, fields, sample_rate):
    monkeypatch.setattr("time.time_ns", lambda: 1_700_000_000_123_456_789)
    out = Recorder()
    stream = io.TextIOWrapper(out)
    configure_logging("info", "json", stream=stream, flush_ms=0)
    try:
        logger = structlog.get_logger("imagegate.http")
        line: dict[str, object] = {
            "method": "POST", "route": "/v1/images/generations", "status": 200, "cache": "hit",
            "ms": 0.25, **fields, "request_id": "req_1",
        }  # fmt: skip
        if sample_rate is not None:
            line["sample_rate"] = sample_rate
        joined = RequestLines(logger, "http.request_completed")
        args = ("POST", "/v1/images/generations", 200, "hit", 0.25, fields, "req_1", sample_rate)
        try:
            info_line(logger, "http.request_completed", line)
        except TypeError:
            with pytest.raises(TypeError):
                joined.write(*args)
            return
        for _ in range(2):  # rendered, then from what was kept
            joined.write(*args)
        direct, *again = out.getvalue().splitlines()
        assert again == [direct, direct]
    finally:
        reset_logging()


def test_the_request_line_goes_through_structlog_on_a_terminal():
    text = io.StringIO()
    configure_logging("info", "console", stream=text)
    try:
        lines = RequestLines(structlog.get_logger("imagegate.http"), "http.request_completed")
        lines.write("POST", "/v1/images/generations", 200, "hit", 1.5, {"key": "k"}, "req_1")
        assert "http.request_completed" in text.getvalue() and "req_1" in text.getvalue()
    finally:
        reset_logging()
