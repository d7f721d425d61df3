"""An httpx transport that sends one public host to a loopback fake.

Real providers hand out `https://` file URLs (Replicate: `https://replicate.delivery/...`). A test
cannot serve that host, so a client built with this transport sends `https://<host>/<path>` to
`http://127.0.0.1:<port>/files/<path>` on the fake; every other request goes out unchanged. The
`Host` header still names the public host, so the fake's request log shows what the client meant.
"""

from __future__ import annotations

from typing import Protocol

import httpx

__all__ = ["LoopbackTransport"]


class _Fake(Protocol):
    port: int


class LoopbackTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """Async and sync: usable as `httpx.AsyncClient(transport=...)`, `httpx.Client(...)` or
    `replicate.Client(transport=...)` (the SDK wraps it in its retry transport)."""

    def __init__(self, fake: _Fake, host: str) -> None:
        self._fake = fake
        self._host = host
        self._async = httpx.AsyncHTTPTransport()
        self._sync = httpx.HTTPTransport()

    def _rewrite(self, request: httpx.Request) -> None:
        if request.url.host == self._host:
            request.url = request.url.copy_with(
                scheme="http",
                host="127.0.0.1",
                port=self._fake.port,
                path="/files" + request.url.path,
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._rewrite(request)
        return await self._async.handle_async_request(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._rewrite(request)
        return self._sync.handle_request(request)

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()

    def close(self) -> None:
        self._sync.close()
