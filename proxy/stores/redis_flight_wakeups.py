"""Wake-ups for flight waiters: one pub/sub connection per `RedisFlightLock`.

Every release publishes the request key on one channel (`{prefix}flights`). Each replica
listens with a single connection and wakes only its own waiters of that key, so 50
waiters on a replica cost one connection, not 50, and nothing is subscribed or
unsubscribed per flight. A wake-up is only a hint to try the lease again now: a waiter
also retries on its poll interval, which covers a message lost while the listener was
(re)connecting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

import redis.exceptions
from redis.asyncio import Redis

__all__ = ["Wakeups"]

_IDLE: Final = 30.0  # seconds the listener reads before checking its connection


class Wakeups:
    def __init__(self, client: Redis, channel: str) -> None:
        self._redis = client
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @contextlib.asynccontextmanager
    async def watch(self, key: str, *, ready_within: float) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `key` is released on any replica, while inside. Waits up
        to `ready_within` for the subscription, so a release published after this returns
        is not missed (the poll covers the rest)."""
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            self._start()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ready_within):
                    await self._ready.wait()
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._ready.clear()
            self._task = asyncio.create_task(self._listen(), name="redis-flight-wakeups")

    async def _listen(self) -> None:
        """Subscribe, then wake waiters until cancelled or the connection fails (a failure
        ends the task; the next `watch` starts another, and polls cover the gap)."""
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            while True:
                # A bounded read, so the client's health check pings an idle connection.
                message = await pubsub.get_message(timeout=_IDLE)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # Redis confirms: now nothing is missed
                    self._ready.set()
                elif message["type"] == "message":
                    self._wake(bytes(message["data"]).decode())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            for waiters in self._waiters.values():  # retry now: each will see Redis is down
                for event in waiters:
                    event.set()
        finally:
            self._ready.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
