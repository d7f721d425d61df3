"""Connect only to addresses that were checked: an httpx transport whose connections resolve
the host name once, drop the addresses the allow-list does not admit, and connect to one of
the addresses that were kept. There is no second lookup between the check and the connect
(a DNS answer that changes in between cannot send the download elsewhere); TLS still
verifies the certificate against the host name, and `Host` still names it.

    Downloader -> httpx.AsyncClient -> PinnedTransport -> httpcore pool
        -> _PinnedBackend.connect_tcp(host): Resolver.resolve(host) -> check -> connect(ip)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import httpcore
import httpx

from proxy.providers.allowlist import is_ip, is_non_public

__all__ = ["PinnedTransport", "Resolver", "SystemResolver"]


class Resolver(Protocol):
    """Host name -> IP addresses (as strings), in the order to try them."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver (`getaddrinfo`), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, with resolution (and the address check) done here."""

    def __init__(
        self, resolver: Resolver, admits: Callable[[str], bool], refuse: Callable[[str], Exception]
    ) -> None:
        self._resolver = resolver
        self._admits = admits  # a non-public address the operator listed
        self._refuse = refuse  # the error for a host with no admissible address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = [host] if is_ip(host) else await self._checked(host, port, timeout)
        failure: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def _checked(self, host: str, port: int, seconds: float | None) -> list[str]:
        try:
            async with asyncio.timeout(seconds):
                found = await self._resolver.resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        kept = [a for a in found if not is_non_public(a) or self._admits(a)]
        if not kept:
            raise self._refuse(host)
        return kept

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for downloads")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's exceptions -> httpx's (as httpx's own transport maps them), most specific first.
_MAPPED: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _MAPPED:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx.AsyncByteStream):
    """httpcore's response body as httpx's, its errors mapped as they surface."""

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _mapped():
                await close()


class PinnedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over connections from `_PinnedBackend`; certificates verified as usual."""

    def __init__(
        self,
        resolver: Resolver,
        admits: Callable[[str], bool],
        refuse: Callable[[str], Exception],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=20,
            keepalive_expiry=5.0,
            network_backend=_PinnedBackend(resolver, admits, refuse),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = await self._pool.handle_async_request(core)
        assert isinstance(response.stream, AsyncIterable)  # the async pool's streams are
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
