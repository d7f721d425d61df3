"""Slow, idle and misbehaving clients, against `imagegate serve` in a subprocess on real sockets:
idle and slow connections are closed, a client that leaves mid-body is a 499 (not a 500),
and a request aiohttp cannot parse is one JSON warning line, not a traceback."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.test_crash_recovery import start_gateway
from tests.proxy.test_workers import clean_env

CLOSED_WITHIN = 20.0  # seconds a test waits for the server to close a socket (not a timing check)


@dataclass
class Served:
    root: str
    host: str
    port: int
    log: Path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@asynccontextmanager
async def serve(tmp_path: Path, server: str) -> AsyncIterator[Served]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
        f"[server]\n{server}\n"
        '[logging]\nformat = "json"\nflush_ms = 0\n'
    )
    proc, base_url = await start_gateway(config, clean_env())
    match = re.fullmatch(r"http://(.+):(\d+)/v1", base_url)
    assert match
    try:
        yield Served(base_url[: -len("/v1")], match[1], int(match[2]), tmp_path / "gateway.stderr")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN)


async def dribble(writer: asyncio.StreamWriter, data: bytes, gap: float) -> None:
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(gap)
    except ConnectionError:
        pass  # closed by the server: what the test waits for


async def get_twice_with_a_pause(host: str, port: int, pause: float) -> list[bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    answers = []
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])
        answers.append(head.split(b"\r\n")[0] + b" " + await reader.readexactly(length))
        await asyncio.sleep(pause)
    writer.close()
    return answers


async def test_new_connections_that_send_no_complete_headers_are_closed(tmp_path):
    # keep-alive is long here, so what closes them is the header deadline
    server = "header_timeout_seconds = 0.2\nkeepalive_timeout_seconds = 60\n"
    async with serve(tmp_path, server) as gw:
        idle = [await asyncio.open_connection(gw.host, gw.port) for _ in range(20)]
        slow = [await asyncio.open_connection(gw.host, gw.port) for _ in range(5)]
        headers = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        drips = [asyncio.create_task(dribble(w, headers, 0.05)) for _, w in slow]
        closed = await asyncio.gather(*(closed_by_server(r) for r, _ in idle + slow))
        assert closed == [b""] * 25  # closed without an answer
        await asyncio.gather(*drips)
        for _, writer in idle + slow:
            writer.close()
        # a normal client: its first request comes at once; a later one may wait (keep-alive)
        answers = await get_twice_with_a_pause(gw.host, gw.port, pause=0.6)
        assert answers == [b'HTTP/1.1 200 OK {"status": "ok"}'] * 2
        async with aiohttp.ClientSession() as http, http.get(gw.root + "/healthz") as got:
            assert got.status == 200


async def test_a_connection_idle_after_a_request_is_closed_after_the_keepalive_timeout(tmp_path):
    server = "keepalive_timeout_seconds = 0.3\nheader_timeout_seconds = 60\n"
    async with serve(tmp_path, server) as gw:
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = await closed_by_server(reader)  # the answer, then nothing, then closed
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"status": "ok"}')
        writer.close()


async def test_a_body_that_stalls_gets_408_and_the_connection_is_closed(tmp_path):
    async with serve(tmp_path, "body_timeout_seconds = 0.5\n") as gw:
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"prompt": "a'
        )
        answer = await closed_by_server(reader)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        writer.close()

        # a body that keeps coming, slowly, is read to the end
        payload = json.dumps({"prompt": "slow but steady", "model": "flux-schnell"}).encode()
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
        )
        for i in range(0, len(payload), 4):
            writer.write(payload[i : i + 4])
            await writer.drain()
            await asyncio.sleep(0.05)  # far under the 0.5 s the body may stall
        answer = await closed_by_server(reader)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:300]
        writer.close()


async def logged(gw: Served, event: str) -> list[dict[str, object]]:
    """Every log line, once one with `event` is written; each must be one JSON object."""
    for _ in range(int(CLOSED_WITHIN / 0.05)):
        records = [json.loads(line) for line in gw.lines()]  # fails on any non-JSON line
        if any(r["event"] == event for r in records):
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} line in {gw.lines()}")


async def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(tmp_path):
    async with serve(tmp_path, "") as gw:
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(
            b"POST /v1/images/generations HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"prompt": "'
            + b"a" * 400
        )
        await writer.drain()
        writer.close()  # half the body, then gone
        records = await logged(gw, "http.request_completed")
        async with aiohttp.ClientSession() as http, http.get(gw.root + "/metrics") as got:
            text = await got.text()
    (line,) = [r for r in records if r["event"] == "http.request_completed"]
    assert line["status"] == 499
    (left,) = [r for r in records if r["event"] == "http.client_disconnected"]
    assert left["level"] == "info"
    assert not [r for r in records if r["level"] == "error" or "exception" in r]
    statuses = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "imagegate_http_requests_total"
        and sample.labels["route"] == "/v1/images/generations"
    }
    assert statuses == {"499": 1.0}  # apart from the 5xx of the error ratio


async def test_a_nul_in_a_header_is_a_400_and_one_json_warning_line(tmp_path):
    async with serve(tmp_path, "") as gw:
        reader, writer = await asyncio.open_connection(gw.host, gw.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Token: secret\x00part\r\n\r\n")
        answer = await closed_by_server(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.0 400 ")
        records = await logged(gw, "http.bad_request")
    (bad,) = [r for r in records if r["event"] == "http.bad_request"]
    assert bad["level"] == "warning" and bad["status"] == 400
    assert "header" in str(bad["reason"]).lower()
    assert "Traceback" not in gw.log.read_text() and "secret" not in gw.log.read_text()
