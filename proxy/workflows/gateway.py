"""The one place the client commands talk to a gateway: `GatewayClient`.

It owns the base URL (`root_url`: the gateway's root; a trailing `/v1` is accepted), the
official openai SDK client for the image route, an aiohttp session for the JSON routes
(`/admin/...`, `/v1/models`), the `Authorization` headers, the retry policy of image calls,
and the mapping of HTTP answers to the commands' values:

    Made         an image request's answer (`outcomes`): headers, images, cost in micro-USD
    LineFailed   an image request failed for good (`outcomes`): the OpenAI error's fields
    Refused      a JSON route answered 4xx/5xx (status, the envelope's message)
    Unreachable  no answer at all (connection refused, timeout)

Image calls retry connection errors and timeouts, 5xx, and 429 (waiting as long as
`Retry-After` says), with exponential backoff and jitter. Never retried: any other 4xx,
`insufficient_quota`, or a response that says `x-should-retry: false`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp

from proxy.workflows.outcomes import LineFailed, Made
from proxy.workflows.retry_timing import backoff, retry_after

if TYPE_CHECKING:
    import openai
# `openai` takes longer to load than the rest of `imagegate` together, and every run of the
# CLI (`imagegate serve` too) loads this module to build the commands' parsers: the functions
# that use the SDK import it.

__all__ = ["BadBaseUrl", "GatewayClient", "Refused", "Unreachable", "retry_delay", "root_url"]

_PLACEHOLDER_KEY: Final = "no-key-given"  # the SDK wants a key to exist; it is never sent


class BadBaseUrl(ValueError):
    """`--base-url` is not an http(s) URL (a usage error)."""


def root_url(url: str) -> str:
    """The gateway's root: `http://host:8080`, `.../`, `.../v1`, `.../v1/` all become
    `http://host:8080`."""
    root = url.strip().rstrip("/").removesuffix("/v1").rstrip("/")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadBaseUrl(f"--base-url must be an http(s) URL, got {url!r}")
    return root


class Refused(Exception):
    """A JSON route answered with an error status; `message` is the envelope's message, else
    the body's text, else the HTTP reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Unreachable(Exception):
    """The gateway gave no answer at `url` (refused connection, timeout, broken response)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


Sleep = Callable[[float], Awaitable[None]]
Heard = Callable[[int], Awaitable[None]]  # told the HTTP status of every answer an attempt got


async def _ignore(status: int) -> None:
    return None


class GatewayClient:
    """`async with GatewayClient(url, ...) as gateway:` then `generate` and `call_json`.

    `api_key` goes with image requests (none given: no Authorization header at all),
    `admin_key` with the JSON routes; `timeout` is per request attempt."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        admin_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        heard: Heard = _ignore,
    ) -> None:
        self.root = root_url(base_url)
        self.api_key, self.admin_key, self.timeout = api_key, admin_key, timeout
        self.retries = retries
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311  # jitter, not secrets
        self.heard = heard
        self._sdk: openai.AsyncOpenAI | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
        if self._http is not None:
            await self._http.close()

    async def generate(self, body: Mapping[str, object]) -> Made:
        """Send `body` to /v1/images/generations, retrying retryable failures."""
        import openai

        attempt = 0
        while True:
            attempt += 1
            try:
                made = await self._once(body, attempt)
            except openai.OpenAIError as exc:
                if isinstance(exc, openai.APIStatusError):
                    await self.heard(exc.status_code)
                delay = retry_delay(exc, attempt - 1, self.rng)
                if delay is None or attempt > self.retries:
                    raise _failure(exc, attempt) from None
            else:
                await self.heard(200)
                return made
            await self.sleep(delay)

    async def call_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: object = None,
    ) -> Any:
        """`method path` on the gateway's JSON routes with the admin key: the parsed body (its
        text when it is not JSON). Raises Refused (4xx/5xx) or Unreachable (no answer)."""
        url = self.root + path
        try:
            async with self._session().request(method, url, params=params, json=payload) as answer:
                raw = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(url, str(exc) or type(exc).__name__) from None
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        if answer.status >= 400:
            raise Refused(answer.status, _message(body) or answer.reason or "")
        return body

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            key = self.admin_key
            self._http = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._http

    def _images(self) -> openai.AsyncOpenAI:
        import openai

        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(
                base_url=f"{self.root}/v1",
                api_key=self.api_key or _PLACEHOLDER_KEY,
                max_retries=0,
                timeout=self.timeout,
            )
        return self._sdk

    async def quote(self, body: Mapping[str, object]) -> Any:
        """`body` sent as a dry run (`X-Imagegate-Dry-Run: 1`): the gateway's quote object,
        parsed. Nothing is generated or spent. Raises LineFailed when the gateway refuses it
        or cannot be reached (no retries: a quote costs nothing to ask again)."""
        import openai

        try:
            raw = await self._send(body, dry_run=True)
        except openai.OpenAIError as exc:
            if isinstance(exc, openai.APIStatusError):
                await self.heard(exc.status_code)
            raise _failure(exc, 1) from None
        await self.heard(200)
        return raw.http_response.json()

    async def _send(self, body: Mapping[str, object], *, dry_run: bool = False) -> Any:
        """The one request a line makes: POST /v1/images/generations with `body` (as a dry
        run: the same request, answered with a quote instead of images)."""
        import openai

        extra = {key: value for key, value in body.items() if key != "prompt"}
        prompt = body.get("prompt")
        # No key given: send no Authorization header at all (the SDK client holds a
        # placeholder key; it never goes on the wire).
        headers: dict[str, object] = {} if self.api_key else {"Authorization": openai.Omit()}
        if dry_run:
            headers["X-Imagegate-Dry-Run"] = "1"
        return await self._images().images.with_raw_response.generate(
            prompt=prompt if isinstance(prompt, str) else "",
            extra_body=extra,
            extra_headers=headers,  # type: ignore[arg-type]  # Omit is a header value
        )

    async def _once(self, body: Mapping[str, object], attempt: int) -> Made:
        raw = await self._send(body)
        parsed = raw.parse()  # the legacy raw response parses synchronously
        data = parsed.data or []
        if not data:
            raise LineFailed("the response held no images", raw.status_code, attempts=attempt)
        images = tuple(_decode(item.b64_json, raw.status_code, attempt) for item in data)
        return Made(
            headers={key.lower(): value for key, value in raw.headers.items()},
            images=images,
            revised_prompts=tuple(item.revised_prompt for item in data),
            size=parsed.size,
            quality=parsed.quality,
            output_format=parsed.output_format,
            attempts=attempt,
        )


def _message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return message if isinstance(message, str) else ""
    return body.strip() if isinstance(body, str) else ""


def retry_delay(exc: BaseException, attempt: int, rng: random.Random) -> float | None:
    """Seconds to wait before trying again after `exc`, or None when trying again cannot help."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return backoff(attempt, rng)
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if headers.get("x-should-retry", "").lower() == "false":
        return None
    if "insufficient_quota" in (exc.code, exc.type):
        return None
    if exc.status_code == 429 or exc.status_code >= 500:
        after = retry_after(headers)
        return after if after is not None else backoff(attempt, rng)
    return None


def _decode(b64: str | None, status: int, attempt: int) -> bytes:
    if not b64:
        raise LineFailed("the response held an image without b64_json", status, attempts=attempt)
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise LineFailed("the response held invalid base64", status, attempts=attempt) from None


def _failure(exc: openai.OpenAIError, attempts: int) -> LineFailed:
    import openai

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
