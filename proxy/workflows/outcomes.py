"""What an image request through a gateway comes to: `Made` (the answer) or `LineFailed`
(the failure), made by `gateway.GatewayClient.generate`; and `stops_the_run`, the failures
after which no further line can succeed, on which a batch stops scheduling."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from policies.budget import parse_usd

__all__ = ["LineFailed", "Made", "stops_the_run"]


@dataclass(frozen=True, slots=True)
class Made:
    """A successful image response: the imagegate headers and the decoded images."""

    headers: Mapping[str, str]
    images: tuple[bytes, ...]
    revised_prompts: tuple[str | None, ...]
    size: str | None
    quality: str | None
    output_format: str | None
    attempts: int

    @property
    def cost_micros(self) -> int:
        """`X-Imagegate-Cost-USD` in micro-USD; 0 when absent (not an imagegate) or unreadable."""
        try:
            return parse_usd(self.headers.get("x-imagegate-cost-usd", "0"))
        except ValueError:
            return 0


@dataclass(eq=False)
class LineFailed(Exception):
    """The line failed for good: the OpenAI error body's message, status and code."""

    message: str
    status: int | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    attempts: int = 1
    request_id: str | None = None

    def __str__(self) -> str:
        return self.message


def stops_the_run(error: LineFailed) -> bool:
    """Whether every later line would fail the same way: a 401 or 403 (no key, or a key the
    gateway refuses), a connection the gateway refused after its retries, or the gateway's
    budget spent (`insufficient_quota`). A timeout or a 5xx may pass for the next line."""
    return error.status in (401, 403) or error.code in ("connection_error", "insufficient_quota")
