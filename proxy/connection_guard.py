"""Slow and idle connections are closed: the deadlines aiohttp 3.x does not keep itself.

aiohttp closes a connection that waits longer than `keepalive_timeout` for a request's
headers (idle between requests, or sending them byte by byte). It has no shorter deadline for
the first request of a new connection and none for a request body that stops arriving. A
sweep a few times per deadline keeps those two, so the request path does no extra work:
- a connection that has not sent the complete headers of its first request within
  `header_timeout` of opening is closed;
- a request body that has sent nothing for `body_timeout` fails its read with
  `ClientBodyTimeout` (the middleware answers 408 and the connection closes).
Each is emitted as `ClientTimedOut`.

The sweep reads attributes of aiohttp's `RequestHandler` that are not public API:
`_request_count` and `_current_request` (tests/proxy/test_slow_clients.py fails if a new
aiohttp renames them) and `_reading_paused` (a body is not stalled while we stopped reading).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.observability.events import ClientTimedOut, Events

__all__ = ["ClientBodyTimeout", "ConnectionGuard"]


class ClientBodyTimeout(Exception):
    """The client stopped sending its request body."""


@dataclass
class ConnectionGuard:
    server: web.Server
    header_timeout: float
    body_timeout: float
    events: Events
    _opened: dict[Any, float] = field(default_factory=dict)  # connection -> first seen
    _bodies: dict[Any, tuple[object, int, float]] = field(default_factory=dict)

    @property
    def period(self) -> float:
        """A quarter of the shorter deadline (a deadline is kept within 25 %), at most 1 s."""
        return min(1.0, max(0.01, min(self.header_timeout, self.body_timeout) / 4))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.period)
            self.sweep(loop.time())

    def sweep(self, now: float) -> None:
        connections = self.server.connections
        opened, bodies = self._opened, self._bodies
        for gone in opened.keys() - set(connections):
            del opened[gone]
            bodies.pop(gone, None)
        for conn in connections:
            if conn.transport is None:
                continue
            if getattr(conn, "_request_count", 1) == 0:
                # aiohttp counts a request once its headers are complete
                first = opened.setdefault(conn, now)
                if now - first > self.header_timeout:
                    self.events.emit(ClientTimedOut("header", self.header_timeout))
                    conn.force_close()
                continue
            opened.setdefault(conn, now)
            self._check_body(conn, now)

    def _check_body(self, conn: Any, now: float) -> None:
        request = getattr(conn, "_current_request", None)
        content = request.content if request is not None else None
        if content is None or content.is_eof() or getattr(conn, "_reading_paused", False):
            self._bodies.pop(conn, None)  # no body on the way, or we are the slow side
            return
        seen = self._bodies.get(conn)
        if seen is None or seen[0] is not request or seen[1] != content.total_bytes:
            self._bodies[conn] = (request, content.total_bytes, now)
            return
        if now - seen[2] > self.body_timeout:
            del self._bodies[conn]
            self.events.emit(ClientTimedOut("body", self.body_timeout, seen[1]))
            content.set_exception(
                ClientBodyTimeout(
                    f"The request body stopped arriving: nothing for {self.body_timeout:g} s."
                )
            )
            content.feed_eof()  # nothing more is read: the answer is 408, then close
