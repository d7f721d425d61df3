"""The one error a shared-mode backend raises when it cannot be reached.

Every network adapter (Redis, PostgreSQL, S3) maps its client's connection and timeout
errors to `BackendUnavailable` once, at its edge, so the service needs one `except` to turn
any of them into a 503 that names the backend, and `/readyz` can say which one is down.
Other client errors (a malformed command, a script bug) are not unavailability and
propagate as they are."""

from __future__ import annotations

__all__ = ["BackendUnavailable", "CannotStart"]


class BackendUnavailable(Exception):
    """`backend` ("redis", "postgres" or "s3") cannot be reached; `detail` says how it
    failed (never a password: adapters name host and port, not the URL)."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} is unavailable: {detail}")
        self.backend = backend
        self.detail = detail


class CannotStart(Exception):
    """A backend that could not be reached at start (`proxy.stores.shared`): `str()` is the
    one line `imagegate serve` prints before it exits non-zero."""

    def __init__(self, backend: str, where: str, detail: str) -> None:
        super().__init__(f"cannot reach {backend} at {where}: {detail}")
        self.backend = backend
