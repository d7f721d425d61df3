"""The gateway's error tree. Every error a client can see is one of these.

    GatewayError                      (500 server_error)
    ├── InvalidRequest                (400 invalid_request_error; param and code say what to fix)
    │   ├── ContentPolicyViolation    (400 content_policy_violation)
    │   ├── MethodNotAllowed          (405 method_not_allowed; `allowed` renders as Allow)
    │   ├── RequestTimeout            (408 request_timeout; the body came too slowly)
    │   └── PayloadTooLarge           (413)
    ├── NotFound                      (404 invalid_request_error)
    │   └── ModelNotFound             (404 model_not_found)
    ├── AuthenticationFailed          (401 invalid_api_key)
    ├── Conflict                      (409 the gateway's set-up refuses it; the message says how)
    ├── PolicyDenied                  (429)
    │   ├── BudgetExceeded            (429 insufficient_quota, never retried)
    │   └── RateLimited               (429 rate_limit_exceeded, retry_after)
    ├── NotCached                     (504, Cache-Control: only-if-cached missed)
    ├── NoRoute                       (503 no provider can serve the request; with
    │                                  retry_after when every fit model is only waiting)
    ├── BackendDown                   (503 backend_unavailable: a shared store (redis,
    │                                  postgres, s3) cannot be reached; retried)
    └── ProviderError                 (502 upstream failed)
        ├── ProviderTimeout           (504)
        ├── ProviderRejected          (400, upstream refused the request itself)
        └── ProviderUnavailable       (503)

Each class carries the HTTP status and the OpenAI `type`/`code` it renders as; one
middleware in the shell turns them into `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "AuthenticationFailed",
    "BackendDown",
    "BudgetExceeded",
    "Conflict",
    "ContentPolicyViolation",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoRoute",
    "NotCached",
    "NotFound",
    "PayloadTooLarge",
    "PolicyDenied",
    "ProviderError",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestTimeout",
]


class GatewayError(Exception):
    status_hint: int = 500
    openai_type: str = "server_error"
    default_code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """`retry_after`: seconds after which the same request is worth sending again (the
        answer's `Retry-After`), where the gateway or an upstream knows it."""
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GatewayError):
            return NotImplemented
        return type(self) is type(other) and self.envelope() == other.envelope()

    def __hash__(self) -> int:
        return hash((type(self), self.message, self.param, self.code))


class InvalidRequest(GatewayError):
    status_hint = 400
    openai_type = "invalid_request_error"
    default_code = "invalid_value"


class ContentPolicyViolation(InvalidRequest):
    default_code = "content_policy_violation"


class MethodNotAllowed(InvalidRequest):
    """`allowed` (sorted method names) is what the route takes: the shell sends it as `Allow`."""

    status_hint = 405
    default_code = "method_not_allowed"

    def __init__(
        self,
        message: str,
        *,
        allowed: Iterable[str],
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.allowed: tuple[str, ...] = tuple(sorted(allowed))


class RequestTimeout(InvalidRequest):
    status_hint = 408
    default_code = "request_timeout"


class PayloadTooLarge(InvalidRequest):
    status_hint = 413
    default_code = "payload_too_large"


class NotFound(GatewayError):
    status_hint = 404
    openai_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class AuthenticationFailed(GatewayError):
    status_hint = 401
    openai_type = "invalid_request_error"
    default_code = "invalid_api_key"


class Conflict(GatewayError):
    status_hint = 409
    openai_type = "invalid_request_error"
    default_code = "conflict"


class PolicyDenied(GatewayError):
    status_hint = 429
    openai_type = "requests"


class BudgetExceeded(PolicyDenied):
    openai_type = "insufficient_quota"
    default_code = "insufficient_quota"


class RateLimited(PolicyDenied):
    """`limit`, `remaining` and `reset_seconds` feed OpenAI's x-ratelimit-* headers."""

    default_code = "rate_limit_exceeded"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        param: str | None = None,
        code: str | None = None,
        unit: str = "requests",
        limit: int | None = None,
        remaining: int = 0,
        reset_seconds: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.retry_after: float = retry_after
        self.unit = unit
        self.limit = limit
        self.remaining = remaining
        self.reset_seconds = retry_after if reset_seconds is None else reset_seconds


class NotCached(GatewayError):
    status_hint = 504
    openai_type = "invalid_request_error"
    default_code = "not_cached"


class NoRoute(GatewayError):
    """No model can take the call. `retry_after` (seconds) is set when a fit model is only
    waiting (an upstream's Retry-After, a circuit's cool-down): the request is then worth
    retrying at that time, and the answer says so."""

    status_hint = 503
    openai_type = "server_error"
    default_code = "no_route"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.retryable = retry_after is not None


class BackendDown(GatewayError):
    """A store the gateway shares with its other replicas (Redis, PostgreSQL or S3) cannot
    be reached, so the request cannot be served as it must be (never spending without a
    reservation). The message names the backend and what its operator should check; the
    client may retry after `retry_after` seconds."""

    status_hint = 503
    openai_type = "server_error"
    default_code = "backend_unavailable"
    retryable = True

    _CHECK: ClassVar[dict[str, str]] = {
        "redis": "check that Redis is running and reachable at [redis] url",
        "postgres": "check that PostgreSQL is running and reachable at [postgres] dsn",
        "s3": "check the S3 endpoint, bucket and credentials of [s3]",
    }

    def __init__(self, backend: str, detail: str, *, retry_after: float = 5.0) -> None:
        check = self._CHECK.get(backend, f"check the {backend} backend")
        super().__init__(
            f"The gateway cannot reach its {backend} backend ({detail}), so it cannot serve "
            f"this request now. Retry shortly; the gateway's operator should {check}.",
            retry_after=retry_after,
        )
        self.backend = backend


class ProviderError(GatewayError):
    """An upstream failed. `retryable` failures fall back to the next model; `retry_after`
    (seconds) is the upstream's own hint, honoured before that model is tried again."""

    status_hint = 502
    openai_type = "server_error"
    default_code = "upstream_error"
    retryable = True


class ProviderTimeout(ProviderError):
    status_hint = 504
    default_code = "upstream_timeout"


class ProviderRejected(ProviderError):
    status_hint = 400
    openai_type = "invalid_request_error"
    default_code = "upstream_rejected"
    retryable = False


class ProviderUnavailable(ProviderError):
    status_hint = 503
    default_code = "upstream_unavailable"
