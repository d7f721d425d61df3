"""Request id, GatewayError -> OpenAI error JSON, and one `RequestCompleted` per request
(the app's hooks turn it into the request metrics and the log line)."""

from __future__ import annotations

import math
import os
import re
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from policies.errors import (
    BackendDown,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
)
from proxy.app_keys import CACHE_OUTCOME, LOG_FIELDS, REQUEST_ID
from proxy.connection_guard import ClientBodyTimeout
from proxy.observability.events import (
    ClientDisconnected,
    ErrorAnswered,
    Events,
    RequestCompleted,
    RequestFailed,
)
from proxy.stores.backend_errors import BackendUnavailable

__all__ = [
    "CLIENT_CLOSED", "add_request_id", "error_response", "rate_limit_headers",
    "request_middleware",
]  # fmt: skip

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's status for a request whose client closed the connection before the answer: counted
# and logged apart from 5xx, which are the gateway's own failures. Never sent (nobody listens).
CLIENT_CLOSED = 499


def request_middleware(events: Events) -> Middleware:
    """The only middleware (one layer per request is measurably cheaper than two): binds the
    request id, turns every failure into OpenAI's error envelope, times the request and
    emits it as `RequestCompleted` (by route template: the metrics, and the log line)."""
    emit = events.emit
    templates: dict[object, str] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-Id")
        if incoming is not None and _REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:  # the shape of uuid4().hex, from the same source, for a third of the cost
            request_id = "req_" + os.urandom(16).hex()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(request, exc, events)
        except Exception as exc:
            response = error_response(request, exc, events)
        elapsed = time.perf_counter() - started
        method = request.method if request.method in _METHODS else "OTHER"  # bounded labels
        emit(
            RequestCompleted(
                _route_template(request, templates),
                method,
                response.status,
                request.get(CACHE_OUTCOME, "none").lower(),
                elapsed,
                request.get(LOG_FIELDS, {}),
                request_id,
            )
        )
        return response

    return middleware


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`X-Request-Id` on every answer, as its headers are sent (`on_response_prepare`): also
    on those a handler sends itself before the middleware sees them (streams, large ones)."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id


def error_response(request: web.Request, exc: Exception, events: Events) -> web.Response:
    """Every failure becomes OpenAI's error envelope; nothing a client sends makes a 500.
    What happened is emitted: `ErrorAnswered` always, `RequestFailed` for an unexpected
    exception (its traceback), `ClientDisconnected` for a client that left (status 499)."""
    error: GatewayError
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, BackendUnavailable):  # a shared store is down: 503, retry later
        error = BackendDown(exc.backend, exc.detail)
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        error = PayloadTooLarge("The request body is too large for this gateway.")
    elif isinstance(exc, web.HTTPNotFound):
        error = NotFound(f"Unknown route: {request.method} {request.path[:100]}.")
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = MethodNotAllowed(
            f"Method {request.method} is not allowed here; use {allowed}.",
            allowed=exc.allowed_methods,
        )
    elif isinstance(exc, web.HTTPException):
        error = _HttpStatus(exc.status, exc.reason)
    elif isinstance(exc, ClientBodyTimeout):
        error = RequestTimeout(str(exc))
    elif isinstance(exc, web.RequestPayloadError):
        error = InvalidRequest(f"The request body is malformed: {exc}.", code="invalid_body")
    elif isinstance(exc, ConnectionError) and _client_left(request):
        events.emit(ClientDisconnected(request.path[:100], str(exc)[:100]))
        return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")
    else:
        events.emit(RequestFailed(request.path[:100], exc))
        error = GatewayError("The gateway had an error while processing your request.")
    events.emit(ErrorAnswered(error.status_hint, error.code, error.message))
    return _render(error)


def _render(error: GatewayError) -> web.Response:
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers = rate_limit_headers(error)
    elif error.retry_after and error.retryable:  # a wait an upstream or a circuit named
        headers = _retry_after(error.retry_after) | {"x-should-retry": "true"}
    elif isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)  # RFC 9110 15.5.6
    if not error.retryable:  # SDKs retry 429 and 5xx by default; tell them when it cannot help
        headers["x-should-retry"] = "false"
    response = web.json_response(error.envelope(), status=error.status_hint, headers=headers)
    if isinstance(error, RequestTimeout):
        response.force_close()  # what else the client sends is not read
    return response


class _HttpStatus(InvalidRequest):
    """Any other status aiohttp itself raised (its reason is the message): kept as it is."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason, code=None)
        self.status_hint = status


def _client_left(request: web.Request) -> bool:
    """The connection to the client is closed: a ConnectionError is theirs, not upstream's."""
    transport = request.transport
    return transport is None or transport.is_closing()


def rate_limit_headers(error: RateLimited) -> dict[str, str]:
    """Retry-After and OpenAI's x-ratelimit-* headers, which the SDKs back off by."""
    headers = _retry_after(error.retry_after)
    if error.limit is not None:
        unit = error.unit
        headers[f"x-ratelimit-limit-{unit}"] = str(error.limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(error.remaining)
        headers[f"x-ratelimit-reset-{unit}"] = f"{max(1, math.ceil(error.reset_seconds * 1000))}ms"
    return headers


def _retry_after(seconds: float) -> dict[str, str]:
    """Whole seconds for every client; milliseconds for the SDKs, which prefer them."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def _route_template(request: web.Request, known: dict[object, str]) -> str:
    """The matched route's template; `known` keeps it per route of the app (a request that
    matched none has a route of its own, never kept)."""
    route = request.match_info.route
    template = known.get(route)
    if template is None:
        resource = route.resource if route is not None else None
        if resource is None:
            return "unmatched"
        template = known[route] = resource.canonical
    return template
