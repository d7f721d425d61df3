"""One batch line against the gateway: the official SDK, read headers, retry what can pass.

Retried: connection errors and timeouts, 5xx, and 429 (waiting as long as `Retry-After`
says), with exponential backoff and jitter. Never retried: any other 4xx, `insufficient_quota`,
or a response that says `x-should-retry: false`.

`stops_the_run` names the failures after which no further line can succeed (no or a refused
API key, a gateway that refuses connections, the gateway's budget spent): a batch stops
scheduling on them instead of failing every line the same way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import openai

__all__ = ["Caller", "Generated", "LineFailed", "retry_delay", "stops_the_run"]

_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 8.0
_RETRY_AFTER_CAP: Final = 120.0


@dataclass(frozen=True, slots=True)
class Generated:
    """A successful response: the imagegate headers and the decoded images."""

    headers: Mapping[str, str]
    images: tuple[bytes, ...]
    revised_prompts: tuple[str | None, ...]
    size: str | None
    quality: str | None
    output_format: str | None
    attempts: int

    @property
    def cost(self) -> Decimal:
        """`X-Imagegate-Cost-USD`, exact; 0 when absent (not an imagegate) or unreadable."""
        try:
            value = Decimal(self.headers.get("x-imagegate-cost-usd", "0"))
        except InvalidOperation:
            return Decimal(0)
        return value if value.is_finite() and value >= 0 else Decimal(0)


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


Sleep = Callable[[float], Awaitable[None]]
Heard = Callable[[int], Awaitable[None]]  # told the HTTP status of every answer an attempt got


async def _ignore(status: int) -> None:
    return None


class Caller:
    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        retries: int,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        authenticated: bool = True,
        heard: Heard = _ignore,
    ) -> None:
        self.client = client
        self.retries = retries
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311  # jitter, not secrets
        self.heard = heard
        # No key given: send no Authorization header at all (the SDK wants a key to exist, so
        # the client holds a placeholder; it never goes on the wire).
        self._headers: dict[str, object] = {} if authenticated else {"Authorization": openai.Omit()}

    async def generate(self, body: Mapping[str, object]) -> Generated:
        """Send `body` to /v1/images/generations, retrying retryable failures."""
        attempt = 0
        while True:
            attempt += 1
            try:
                generated = await self._once(body, attempt)
            except openai.OpenAIError as exc:
                if isinstance(exc, openai.APIStatusError):
                    await self.heard(exc.status_code)
                delay = retry_delay(exc, attempt - 1, self.rng)
                if delay is None or attempt > self.retries:
                    raise _failure(exc, attempt) from None
            else:
                await self.heard(200)
                return generated
            await self.sleep(delay)

    async def _send(self, body: Mapping[str, object]) -> Any:
        """The one request a line makes: POST /v1/images/generations with `body`.

        The seam for a dry run: a gateway route that quotes a body without generating it
        would be called here instead (its answer read by `_once`), with retries and the
        batch's stop rules unchanged."""
        extra = {key: value for key, value in body.items() if key != "prompt"}
        prompt = body.get("prompt")
        return await self.client.images.with_raw_response.generate(
            prompt=prompt if isinstance(prompt, str) else "",
            extra_body=extra,
            extra_headers=self._headers,  # type: ignore[arg-type]  # Omit is a header value
        )

    async def _once(self, body: Mapping[str, object], attempt: int) -> Generated:
        raw = await self._send(body)
        parsed = raw.parse()  # the legacy raw response parses synchronously
        data = parsed.data or []
        if not data:
            raise LineFailed("the response held no images", raw.status_code, attempts=attempt)
        images = tuple(_decode(item.b64_json, raw.status_code, attempt) for item in data)
        return Generated(
            headers={key.lower(): value for key, value in raw.headers.items()},
            images=images,
            revised_prompts=tuple(item.revised_prompt for item in data),
            size=parsed.size,
            quality=parsed.quality,
            output_format=parsed.output_format,
            attempts=attempt,
        )


def retry_delay(exc: BaseException, attempt: int, rng: random.Random) -> float | None:
    """Seconds to wait before trying again after `exc`, or None when trying again cannot help."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return _backoff(attempt, rng)
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if headers.get("x-should-retry", "").lower() == "false":
        return None
    if "insufficient_quota" in (exc.code, exc.type):
        return None
    if exc.status_code == 429 or exc.status_code >= 500:
        after = _retry_after(headers)
        return after if after is not None else _backoff(attempt, rng)
    return None


def stops_the_run(error: LineFailed) -> bool:
    """Whether every later line would fail the same way: a 401 or 403 (no key, or a key the
    gateway refuses), a connection the gateway refused after its retries, or the gateway's
    budget spent (`insufficient_quota`). A timeout or a 5xx may pass for the next line."""
    return error.status in (401, 403) or error.code in ("connection_error", "insufficient_quota")


def _backoff(attempt: int, rng: random.Random) -> float:
    ceiling = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)
    return ceiling * (0.5 + rng.random() / 2)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, or `Retry-After` in seconds or as an HTTP date; capped."""
    seconds: float | None = None
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            seconds = float(headers["retry-after"])
    except ValueError:
        seconds = _http_date(headers.get("retry-after", ""))
    if seconds is None or seconds != seconds or seconds < 0:  # absent, NaN or negative
        return None
    return min(seconds, _RETRY_AFTER_CAP)


def _http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode(b64: str | None, status: int, attempt: int) -> bytes:
    if not b64:
        raise LineFailed("the response held an image without b64_json", status, attempts=attempt)
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise LineFailed("the response held invalid base64", status, attempts=attempt) from None


def _failure(exc: openai.OpenAIError, attempts: int) -> LineFailed:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message")
        return LineFailed(
            message if isinstance(message, str) and message else exc.message,
            exc.status_code,
            exc.code,
            exc.type,
            exc.param,
            attempts,
            exc.request_id,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f"{exc.message} ({cause})" if cause is not None and str(cause) else exc.message
        timeout = isinstance(exc, openai.APITimeoutError)
        return LineFailed(
            detail, code="timeout" if timeout else "connection_error", attempts=attempts
        )
    return LineFailed(str(exc) or type(exc).__name__, attempts=attempts)
