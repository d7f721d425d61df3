"""The fal.ai adapter: its queue API over plain HTTP with aiohttp (WIRE.md §4).

    POST {base}/{model_id}   -> {request_id, status_url, response_url, cancel_url}
    GET  status_url          -> {"status": "IN_QUEUE" | "IN_PROGRESS" | "COMPLETED"}
    GET  response_url        -> {"images": [{"url", ...}], "has_nsfw_concepts": [...]}
    PUT  cancel_url          (on timeout)

Every call carries `Authorization: Key <key>`, so the URLs the queue hands back are used
only when they are on the base URL's origin; otherwise the documented paths are built from
the request id. Output files (https on `fal.media` by default, or `data:` URIs) are fetched
by `Downloader`. Cost is per megapixel from the catalog, so no usage is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import httpx

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import GeneratedImage
from proxy.config import ProviderSettings
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.downloads import Downloader
from proxy.providers.errors_map import CONTENT_POLICY, from_status, retry_after_seconds, scrub
from proxy.providers.redirects import REDIRECT_REFUSED

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_DOWNLOAD_HOSTS", "FalProvider"]

DEFAULT_BASE_URL: Final = "https://queue.fal.run"
DEFAULT_DOWNLOAD_HOSTS: Final = ("fal.media", "*.fal.media")
_PENDING: Final = frozenset({"IN_QUEUE", "IN_PROGRESS"})
_CANCEL_SECONDS: Final = 5.0
_MAX_JSON: Final = 8 * 1024 * 1024
_FORMATS: Final = ("jpeg", "png")


@dataclass(frozen=True, slots=True)
class _Queued:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


class FalProvider:
    """A `Provider` for fal.ai's queue. `transport` routes file downloads (tests)."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        poll_interval: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._secret = settings.api_key.reveal()
        self._poll_interval = poll_interval
        self._base = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._downloads = Downloader(
            self.name,
            settings.download_hosts or DEFAULT_DOWNLOAD_HOSTS,
            max_bytes=settings.max_image_mb * 1024 * 1024,
            timeout=settings.timeout_seconds,
            transport=transport,
        )

    def has_credentials(self) -> bool:
        return bool(self._secret) and self._settings.enabled is not False

    async def generate(self, call: ProviderCall) -> ProviderResult:
        payload = _input(call)
        deadline = asyncio.get_running_loop().time() + self._settings.timeout_seconds
        with _translate_errors(self.name, self._secret):
            queued = await self._submit(call.model.upstream, payload, deadline)
            await self._wait(queued, deadline)
            try:
                result = await self._request("GET", queued.response_url, deadline)
            except TimeoutError:
                raise self._timeout(None) from None
        urls = _image_urls(result, len(call.indexes))
        fetched = await self._downloads.fetch_all(urls)
        return ProviderResult(images=tuple(GeneratedImage(data=data) for data in fetched))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._downloads.aclose()

    # -- the queue -----------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        """The session, made inside the running loop on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Key {self._secret}", "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(
                    total=self._settings.timeout_seconds,
                    sock_connect=min(self._settings.timeout_seconds, 5.0),
                ),
            )
        return self._session

    async def _request(
        self, method: str, url: str, deadline: float | None, body: object = None
    ) -> Any:
        """The JSON answer; an HTTP error status raises the gateway's error for it."""
        async with (
            asyncio.timeout_at(deadline),
            self._http().request(method, url, json=body, allow_redirects=False) as response,
        ):
            raw = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                raw += chunk
                if len(raw) > _MAX_JSON:
                    raise ProviderError(f"fal answered more than {_MAX_JSON} bytes of JSON.")
            status, headers = response.status, response.headers
        if 300 <= status < 400:  # never replayed (with the key) anywhere: a provider fault
            raise ProviderUnavailable(
                f"The upstream provider '{self.name}' answered a redirect (HTTP {status}); "
                "the gateway does not follow redirects from fal's queue.",
                code=REDIRECT_REFUSED,
            )
        if status >= 400:
            detail, policy = _error_detail(bytes(raw))
            retry_after = retry_after_seconds(headers)
            raise from_status(
                self.name,
                status,
                detail,
                secret=self._secret,
                retry_after=retry_after,
                content_policy=policy,
            )
        return json.loads(raw) if raw else {}

    async def _submit(self, model_id: str, payload: dict[str, Any], deadline: float) -> _Queued:
        try:
            answer = await self._request("POST", f"{self._base}/{model_id}", deadline, payload)
        except TimeoutError:
            raise self._timeout(None) from None
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError("fal's queue answered without a request_id.", code="invalid_output")
        # Status, result and cancel live under owner/app, without the submit's subpath.
        root = f"{self._base}/{'/'.join(model_id.split('/')[:2])}/requests/{request_id}"
        return _Queued(
            request_id,
            self._same_origin(answer.get("status_url")) or f"{root}/status",
            self._same_origin(answer.get("response_url")) or root,
            self._same_origin(answer.get("cancel_url")) or f"{root}/cancel",
        )

    def _same_origin(self, url: object) -> str | None:
        if not isinstance(url, str):
            return None
        return url if urlsplit(url)[:2] == urlsplit(self._base)[:2] else None

    async def _wait(self, queued: _Queued, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                answer = await self._request("GET", queued.status_url, deadline)
            except TimeoutError:
                await self._cancel(queued)
                raise self._timeout(queued.request_id) from None
            answer = answer if isinstance(answer, dict) else {}
            status = answer.get("status")
            if status == "COMPLETED":
                return
            if status not in _PENDING:
                error = scrub(str(answer.get("error") or status), self._secret)
                raise ProviderUnavailable(
                    f"fal request {queued.request_id} ended as {error}.",
                    code="upstream_prediction_failed",
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._cancel(queued)
                raise self._timeout(queued.request_id)
            await asyncio.sleep(min(self._poll_interval, remaining))

    async def _cancel(self, queued: _Queued) -> None:
        """Best effort: a failed cancel must not hide the timeout that caused it."""
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, ProviderError, ValueError):
            async with asyncio.timeout(_CANCEL_SECONDS):
                await self._request("PUT", queued.cancel_url, None)

    def _timeout(self, request_id: str | None) -> ProviderTimeout:
        which = f"fal request {request_id}" if request_id else "fal"
        cancelled = " and was cancelled" if request_id else ""
        return ProviderTimeout(
            f"{which} did not finish within {self._settings.timeout_seconds:g} s{cancelled}."
        )


def _image_urls(result: object, count: int) -> list[str]:
    """The first `count` image URLs of a result; a safety flag on any is a refusal."""
    result = result if isinstance(result, dict) else {}
    images = result.get("images")
    items = [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []
    urls = [u for u in (i.get("url") for i in items) if isinstance(u, str) and u][:count]
    if len(urls) < count:
        raise ProviderError(
            f"fal returned {len(urls)} image(s) for {count} asked.", code="invalid_output"
        )
    flags = result.get("has_nsfw_concepts")
    if isinstance(flags, list) and any(flag is True for flag in flags[:count]):
        raise ProviderRejected(
            "The upstream provider's safety checker flagged the image(s) as NSFW.",
            code=CONTENT_POLICY,
        )
    return urls


def _input(call: ProviderCall) -> dict[str, Any]:
    req, spec = call.request, call.model
    if req.operation != "generate" or req.prompt is None:
        raise ProviderRejected(f"'{spec.name}' only generates from a prompt.", param="prompt")
    if len(call.indexes) > spec.max_per_call:
        raise ProviderRejected(
            f"'{spec.name}' makes at most {spec.max_per_call} image(s) per call; "
            f"the caller asked {len(call.indexes)}.",
            param="n",
        )
    image_size = spec.aspect_ratios.get(req.size)
    if image_size is None:
        raise ProviderRejected(f"'{spec.name}' does not take size {req.size}.", param="size")
    # fal makes jpeg or png; anything else is asked as png and converted by the gateway.
    ok = req.output_format in _FORMATS and req.output_format in spec.formats
    data: dict[str, Any] = {
        "prompt": req.prompt,
        "image_size": image_size,
        "num_images": len(call.indexes),
        "output_format": req.output_format if ok else "png",
        "enable_safety_checker": True,
    }
    if req.seed is not None:
        data["seed"] = req.seed
    if spec.safety_param:
        data[spec.safety_param] = spec.safety_value
    return data


def _error_detail(raw: bytes) -> tuple[str, bool]:
    """(message, whether a content-policy refusal) from fal's two error shapes:
    `{"detail": "text", "error_type"}` and `{"detail": [{"loc", "msg", "type"}, ...]}`."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace"), False
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        items = [d for d in detail if isinstance(d, dict)]
        message = "; ".join(str(d.get("msg", "")) for d in items)
        return message, any(d.get("type") == CONTENT_POLICY for d in items)
    return str(detail or ""), False


@contextmanager
def _translate_errors(provider: str, secret: str) -> Iterator[None]:
    """aiohttp's and JSON's exceptions -> the gateway's, once (HTTP statuses are mapped
    where they are read); the key never shows."""
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise ProviderTimeout(f"The upstream provider '{provider}' timed out.") from None
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(
            f"The upstream provider '{provider}' could not be reached: {type(exc).__name__}."
        ) from None
    except ValueError as exc:
        raise ProviderError(
            f"The upstream provider '{provider}' sent an unreadable answer: "
            f"{scrub(str(exc), secret)[:200]}",
            code="invalid_output",
        ) from None
