"""Errors of the shared stores (Redis, PostgreSQL, S3), raised by their adapters."""

from __future__ import annotations

__all__ = ["BackendUnavailable"]


class BackendUnavailable(Exception):
    """A shared store that cannot be reached: the service answers 503 naming it."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} is unavailable: {detail}")
        self.backend = backend
        self.detail = detail
