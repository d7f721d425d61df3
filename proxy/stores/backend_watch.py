"""Every call to a shared-mode backend, timed and counted, and each backend's last failure.

The shared adapters (Redis, PostgreSQL, S3) are wrapped once, when the stores are opened
(`BackendWatch.timed`): each `async` method of a port then emits a `BackendCalled` event
(backend, "port.method", seconds, whether the backend answered), which the metrics hook
turns into `imagegate_backend_seconds` and `imagegate_backend_errors_total`. The events
sink is attached by the app (`attach`), which is built after the stores; calls made before
(start-up's migrations and pings) are not counted.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from proxy.observability.events import BackendCalled, Event, Events
from proxy.stores.backend_errors import BackendUnavailable

__all__ = ["BackendWatch"]

_T = TypeVar("_T")


def _ignore(_event: Event) -> None:
    return None


class BackendWatch:
    """Times the calls of the ports it wraps; `failed_at[backend]`: when (monotonic) a call
    to it last failed to reach it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.emit: Callable[[Event], None] = _ignore
        self.failed_at: dict[str, float] = {}

    def attach(self, events: Events) -> None:
        self.emit = events.emit

    def timed(self, port: _T, backend: str, name: str) -> _T:
        """`port` with every `async` method timed as `name.method` on `backend`."""
        return cast(_T, _Timed(port, backend, name, self))

    async def call(self, backend: str, operation: str, run: Callable[[], Awaitable[_T]]) -> _T:
        """Run one backend call, timed; a `BackendUnavailable` is counted and re-raised."""
        started = time.perf_counter()
        ok = False
        try:
            result = await run()
            ok = True
            return result
        except BackendUnavailable as exc:
            self.failed_at[exc.backend] = self.clock()
            raise
        finally:
            self.emit(BackendCalled(backend, operation, time.perf_counter() - started, ok))


class _Timed:
    """A port's adapter seen through a `BackendWatch`: its coroutine methods are timed, every
    other attribute is the adapter's own. Wrapped methods are kept on the instance, so only
    the first use of each goes through `__getattr__`."""

    def __init__(self, inner: object, backend: str, name: str, watch: BackendWatch) -> None:
        self._inner = inner
        self._backend = backend
        self._name = name
        self._watch = watch

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not inspect.iscoroutinefunction(value):
            return value
        operation = f"{self._name}.{attr}"
        backend, watch = self._backend, self._watch

        @functools.wraps(value)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            return await watch.call(backend, operation, lambda: value(*args, **kwargs))

        self.__dict__[attr] = timed
        return timed

    def __repr__(self) -> str:
        return f"timed({self._inner!r})"
