"""The Replicate adapter, via the official `replicate` SDK (WIRE.md §3).

A call is one prediction on `owner/name` (or `owner/name:version`): created with `Prefer:
wait=N` (N below the provider's timeout), then polled with our own loop until it is final,
because the SDK treats a `processing` answer as final. On timeout the prediction is cancelled.
Outputs (`data:` URIs or https URLs) are fetched by `Downloader`, never by the SDK's
`FileOutput` (which would send the Replicate token to the file host).

The SDK retries 429/503/504 on GETs by itself (honouring any Retry-After, uncapped). A small
transport under it turns those answers into an error at once, keeping the Retry-After,
so that retries stay the router's policy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import CONTENT_TYPES, GeneratedImage
from proxy.config import ProviderSettings
from proxy.imaging import sniff
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.downloads import Downloader
from proxy.providers.errors_map import (
    CONTENT_POLICY,
    from_status,
    looks_like_safety_refusal,
    retry_after_seconds,
    scrub,
)
from proxy.providers.redirects import same_origin_only

__all__ = ["DEFAULT_DOWNLOAD_HOSTS", "ReplicateProvider"]

DEFAULT_DOWNLOAD_HOSTS: Final = ("replicate.delivery", "*.replicate.delivery")
_TERMINAL: Final = frozenset({"succeeded", "failed", "canceled"})
_SDK_RETRIED: Final = frozenset({429, 503, 504})  # what replicate's RetryTransport retries
_CANCEL_SECONDS: Final = 5.0


class _Throttled(ReplicateError):
    """An answer the SDK would have retried; raised under it instead (with Retry-After)."""

    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(title=f"HTTP {status}", status=status, detail=detail)
        self.retry_after = retry_after


def _problem_detail(body: bytes) -> str:
    """The `detail` (else `title`) of an RFC 7807 body."""
    try:
        problem = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or "")
    return ""


class _NoRetries(httpx.AsyncBaseTransport):
    """Under the SDK's RetryTransport: its retried statuses raise `_Throttled` at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code in _SDK_RETRIED:
            body = await response.aread()
            await response.aclose()
            retry_after = retry_after_seconds(response.headers)
            raise _Throttled(response.status_code, _problem_detail(body), retry_after)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class ReplicateProvider:
    """A `Provider` for Replicate predictions."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._secret = settings.api_key.reveal()
        self._poll_interval = poll_interval
        timeout = settings.timeout_seconds
        self._client = Client(
            api_token=self._secret,
            base_url=settings.base_url or None,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=_NoRetries(transport or httpx.AsyncHTTPTransport()),
            # Same-origin redirects only: a create replayed elsewhere would carry the token.
            follow_redirects=True,
            event_hooks={"response": [same_origin_only(self.name)]},
        )
        self._downloads = Downloader(
            self.name,
            settings.download_hosts or DEFAULT_DOWNLOAD_HOSTS,
            max_bytes=settings.max_image_mb * 1024 * 1024,
            timeout=timeout,
            transport=transport,
        )

    def has_credentials(self) -> bool:
        return bool(self._secret) and self._settings.enabled is not False

    async def generate(self, call: ProviderCall) -> ProviderResult:
        payload = _input(call)
        deadline = asyncio.get_running_loop().time() + self._settings.timeout_seconds
        with _translate_errors(self.name, self._secret):
            prediction = await self._create(call.model.upstream, payload, deadline)
            prediction = await self._poll(prediction, deadline)
        self._check_final(prediction)
        urls = _output_urls(prediction.output)
        if len(urls) < len(call.indexes):
            raise ProviderError(
                f"Replicate prediction {prediction.id} made {len(urls)} image(s) for "
                f"{len(call.indexes)} asked.",
                code="invalid_output",
            )
        fetched = await self._downloads.fetch_all(urls[: len(call.indexes)])
        images = tuple(GeneratedImage(data=data) for data in fetched)
        return ProviderResult(images=images, gpu_seconds=_predict_time(prediction))

    async def aclose(self) -> None:
        await self._client._async_client.aclose()  # the SDK has no public close
        await self._downloads.aclose()

    # -- the prediction's lifecycle --------------------------------------------------------
    async def _create(self, upstream: str, payload: dict[str, Any], deadline: float) -> Prediction:
        # Hold the create for at most N s (Prefer: wait=N), leaving a second of the timeout to
        # answer; under 2 s of timeout, create without waiting and poll.
        wait: int | bool = min(60, int(self._settings.timeout_seconds) - 1)
        wait = wait if wait >= 1 else False
        ref, _, version = upstream.partition(":")
        try:
            async with asyncio.timeout_at(deadline):
                if version:
                    return await self._client.predictions.async_create(
                        version=version, input=payload, wait=wait
                    )
                return await self._client.models.predictions.async_create(
                    model=ref, input=payload, wait=wait
                )
        except TimeoutError:
            raise self._timeout(None) from None

    async def _poll(self, prediction: Prediction, deadline: float) -> Prediction:
        """Until the prediction is final. A `processing` answer with output already set is
        not final: the SDK's blocking create returns such answers. If the gateway abandons
        the call (its task is cancelled: a shutdown), the prediction is cancelled upstream
        too, so it stops costing GPU time nobody will collect."""
        try:
            return await self._poll_until_final(prediction, deadline)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(prediction.id))
            raise

    async def _poll_until_final(self, prediction: Prediction, deadline: float) -> Prediction:
        loop = asyncio.get_running_loop()
        while prediction.status not in _TERMINAL:
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self._cancel(prediction.id)
                raise self._timeout(prediction.id)
            await asyncio.sleep(min(self._poll_interval, remaining))
            try:
                async with asyncio.timeout_at(deadline):
                    prediction = await self._client.predictions.async_get(prediction.id)
            except (TimeoutError, httpx.TimeoutException):
                await self._cancel(prediction.id)
                raise self._timeout(prediction.id) from None
        return prediction

    async def _cancel(self, prediction_id: str) -> None:
        """Best effort: a failed cancel must not hide the timeout (or the cancellation) that
        caused it."""
        with contextlib.suppress(TimeoutError, httpx.HTTPError, ReplicateError, ValueError):
            async with asyncio.timeout(_CANCEL_SECONDS):
                await self._client.predictions.async_cancel(prediction_id)

    def _timeout(self, prediction_id: str | None) -> ProviderTimeout:
        which = f"Replicate prediction {prediction_id}" if prediction_id else "Replicate"
        cancelled = " and was cancelled" if prediction_id else ""
        return ProviderTimeout(
            f"{which} did not finish within {self._settings.timeout_seconds:g} s{cancelled}."
        )

    def _check_final(self, prediction: Prediction) -> None:
        if prediction.status == "succeeded":
            return
        error = scrub(str(prediction.error or "no error given"), self._secret)
        if prediction.status == "canceled":
            raise ProviderUnavailable(
                f"Replicate prediction {prediction.id} was cancelled upstream.",
                code="upstream_prediction_canceled",
            )
        if looks_like_safety_refusal(error):
            raise ProviderRejected(
                f"The upstream provider's safety filter refused the request: {error}",
                code=CONTENT_POLICY,
            )
        raise ProviderUnavailable(
            f"Replicate prediction {prediction.id} failed: {error}",
            code="upstream_prediction_failed",
        )


# -- inputs and outputs --------------------------------------------------------------------
def _input(call: ProviderCall) -> dict[str, Any]:
    req, spec = call.request, call.model
    if req.operation == "variation" or req.prompt is None:
        raise ProviderRejected(f"'{spec.name}' needs a prompt (no variations).", param="prompt")
    if len(call.indexes) > spec.max_per_call:
        raise ProviderRejected(
            f"'{spec.name}' makes at most {spec.max_per_call} image(s) per call; "
            f"the caller asked {len(call.indexes)}.",
            param="n",
        )
    ratio = spec.aspect_ratios.get(req.size)
    if ratio is None:
        raise ProviderRejected(f"'{spec.name}' does not take size {req.size}.", param="size")
    data: dict[str, Any] = {"prompt": req.prompt, "aspect_ratio": ratio, **_format(call)}
    if spec.max_per_call > 1:
        data["num_outputs"] = len(call.indexes)
    if req.seed is not None:
        data["seed"] = req.seed
    if spec.safety_param:
        data[spec.safety_param] = spec.safety_value
    if req.operation == "edit":
        data["image"] = _data_uri(call, req.images[0] if req.images else None, "image")
        if req.mask is not None:
            data["mask"] = _data_uri(call, req.mask, "mask")
    return data


def _format(call: ProviderCall) -> dict[str, Any]:
    """`output_format` (Replicate says `jpg`) when the model has a choice; a format it cannot
    make is asked as png (or its first) and the gateway converts."""
    req, formats = call.request, call.model.formats
    if len(formats) < 2:
        return {}
    fmt: str = req.output_format if req.output_format in formats else "png"
    fmt = fmt if fmt in formats else formats[0]
    fields: dict[str, Any] = {"output_format": "jpg" if fmt == "jpeg" else fmt}
    if req.output_compression is not None and fmt in ("jpeg", "webp"):
        fields["output_quality"] = req.output_compression
    return fields


def _data_uri(call: ProviderCall, key: str | None, param: str) -> str:
    data = call.uploads.get(key) if key is not None else None
    if data is None:
        raise ProviderRejected(f"The '{param}' upload is missing.", param=param)
    mime = CONTENT_TYPES.get(sniff(data), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _output_urls(output: object) -> list[str]:
    """A URI string, a list of them, or `FileOutput`s (which carry `.url`)."""
    items = output if isinstance(output, list | tuple) else [output]
    urls = [getattr(item, "url", item) for item in items]
    return [url for url in urls if isinstance(url, str) and url]


def _predict_time(prediction: Prediction) -> float | None:
    value = (prediction.metrics or {}).get("predict_time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@contextmanager
def _translate_errors(provider: str, secret: str) -> Iterator[None]:
    """The SDK's and httpx's exceptions -> the gateway's, once; the token never shows."""
    try:
        yield
    except ReplicateError as exc:
        detail = str(exc.detail or exc.title or "")
        retry_after = exc.retry_after if isinstance(exc, _Throttled) else None
        raise from_status(
            provider, exc.status or 502, detail, secret=secret, retry_after=retry_after
        ) from None
    except httpx.TimeoutException:
        raise ProviderTimeout(f"The upstream provider '{provider}' timed out.") from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"The upstream provider '{provider}' could not be reached: {type(exc).__name__}."
        ) from None
    except ValueError as exc:  # the SDK's pydantic models refuse an answer
        raise ProviderError(
            f"The upstream provider '{provider}' sent an unreadable answer: "
            f"{scrub(str(exc), secret)[:200]}",
            code="invalid_output",
        ) from None
