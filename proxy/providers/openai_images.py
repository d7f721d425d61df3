"""The OpenAI Images adapter (and any OpenAI-compatible image server), via `openai.AsyncOpenAI`.

It sends only the fields the model's family takes (WIRE.md §1): GPT image models get
`background`, `output_format`, `output_compression`, `moderation` or `input_fidelity` and
never `response_format` (the real API answers 400 to it); DALL-E gets
`response_format="b64_json"` and, for dall-e-3, `style`. Images always come back as bytes
from `b64_json`; a server that sends a `url` anyway is fetched through the download rules.
SDK retries are off: retries are the router's policy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import openai
from openai.types import ImagesResponse

from policies.errors import ProviderError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from policies.models import CONTENT_TYPES, GeneratedImage
from policies.pricing import Usage
from proxy.config import ProviderSettings
from proxy.imaging import sniff
from proxy.ports import ProviderCall, ProviderResult
from proxy.providers.downloads import Downloader
from proxy.providers.errors_map import (
    CONTENT_POLICY,
    auth_failed,
    from_status,
    retry_after_seconds,
    scrub,
)
from proxy.providers.redirects import same_origin_only

__all__ = ["OpenAIImagesProvider"]

FileTuple = tuple[str, bytes, str]
# Where DALL-E `url` results live when no download_hosts are configured.
_OPENAI_FILE_HOSTS: Final = ("oaidalleapiprodscus.blob.core.windows.net",)
_UPLOAD_FORMATS: Final = ("png", "jpeg", "webp")
_SAFETY_CODES: Final = frozenset({"content_policy_violation", "moderation_blocked"})


class OpenAIImagesProvider:
    """A `Provider` for `POST /v1/images/{generations,edits,variations}`."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self._settings = settings
        self._secret = settings.api_key.reveal()
        self._client: openai.AsyncOpenAI | None = None
        self._downloader: Downloader | None = None

    def has_credentials(self) -> bool:
        return bool(self._secret) and self._settings.enabled is not False

    async def generate(self, call: ProviderCall) -> ProviderResult:
        client = self._openai()
        seconds = self._settings.timeout_seconds
        try:
            # The SDK's timeout is per read: a slow drip would hold the call open for ever.
            async with asyncio.timeout(seconds):
                with _translate_errors(self.name, self._secret):
                    response = await self._send(client, call)
        except TimeoutError:
            raise ProviderTimeout(
                f"The upstream provider '{self.name}' did not answer within {seconds:g} s."
            ) from None
        if not isinstance(response, ImagesResponse):  # e.g. an HTML page with 200
            raise ProviderError(
                f"The upstream provider '{self.name}' answered with something other than "
                "an images response (not JSON).",
                code="invalid_output",
            )
        images = await self._images(response, len(call.indexes))
        return ProviderResult(images=images, usage=_usage(response))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._downloader is not None:
            await self._downloader.aclose()
            self._downloader = None

    # -- calls ---------------------------------------------------------------------------
    def _openai(self) -> openai.AsyncOpenAI:
        if not self._secret:
            raise auth_failed(self.name)
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=self._secret,
                base_url=self._settings.base_url or None,
                max_retries=0,
                timeout=self._settings.timeout_seconds,
                # The SDK follows redirects; a POST (with the key) replayed to another origin
                # would bypass every check. Same-origin redirects only.
                http_client=openai.DefaultAsyncHttpxClient(
                    event_hooks={"response": [same_origin_only(self.name)]}
                ),
            )
        return self._client

    async def _send(self, client: openai.AsyncOpenAI, call: ProviderCall) -> object:
        operation = call.request.operation
        if operation == "variation":
            return await _variation(client, call)
        params = _params(call)
        if operation == "edit":
            params.update(_edit_files(call))
            return await client.images.edit(**params)
        return await client.images.generate(**params)

    async def _images(self, response: ImagesResponse, count: int) -> tuple[GeneratedImage, ...]:
        items = response.data or []
        if len(items) < count:
            raise ProviderError(
                f"The upstream provider '{self.name}' returned {len(items)} image(s) for "
                f"{count} asked.",
                code="invalid_output",
            )
        images = []
        for item in items[:count]:
            if item.b64_json:
                data = self._decode(item.b64_json)
            elif item.url:
                data = await self._download(item.url)
            else:
                raise ProviderError(
                    f"The upstream provider '{self.name}' returned an image with no data.",
                    code="invalid_output",
                )
            images.append(GeneratedImage(data=data, revised_prompt=item.revised_prompt))
        return tuple(images)

    def _decode(self, b64: str) -> bytes:
        limit = self._settings.max_image_mb * 1024 * 1024
        if len(b64) * 3 // 4 > limit + 2:
            raise ProviderError(
                f"The upstream provider '{self.name}' returned an image larger than "
                f"{self._settings.max_image_mb} MiB (max_image_mb).",
                code="upstream_image_too_large",
            )
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError(
                f"The upstream provider '{self.name}' returned b64_json that is not base64.",
                code="invalid_output",
            ) from None

    async def _download(self, url: str) -> bytes:
        if self._downloader is None:
            settings = self._settings
            self._downloader = Downloader(
                self.name,
                settings.download_hosts or _default_hosts(settings.base_url),
                max_bytes=settings.max_image_mb * 1024 * 1024,
                timeout=settings.timeout_seconds,
            )
        return await self._downloader.fetch(url)


def _default_hosts(base_url: str) -> tuple[str, ...]:
    """OpenAI's file host, plus the configured server's own origin: its scheme, host and
    port (the operator already trusts it with the key; a self-hosted server serves its files
    itself, but another service on the same host is another origin)."""
    parts = urlsplit(base_url) if base_url else None
    if parts is None or not parts.hostname:
        return _OPENAI_FILE_HOSTS
    return (*_OPENAI_FILE_HOSTS, f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")


# -- request bodies ------------------------------------------------------------------------
def _is_gpt(call: ProviderCall) -> bool:
    """A GPT image model: it takes the GPT fields, a list of edit images, no response_format."""
    return call.model.rules.gpt_fields


def _params(call: ProviderCall) -> dict[str, Any]:
    req = call.request
    if req.prompt is None:
        raise ProviderRejected("A prompt is required.", param="prompt")
    params: dict[str, Any] = {
        "model": call.model.upstream,
        "prompt": req.prompt,
        "n": len(call.indexes),
        "size": req.size,
        "quality": req.quality,
    }
    if _is_gpt(call):
        params.update(_gpt_fields(call))
    else:
        params["response_format"] = "b64_json"
        if call.model.rules.styles and req.style is not None:
            params["style"] = req.style
    return params


def _gpt_fields(call: ProviderCall) -> dict[str, Any]:
    req, edit = call.request, call.request.operation == "edit"
    # A format the model cannot make is asked as png; the gateway converts it.
    fmt = req.output_format if req.output_format in call.model.formats else "png"
    fields: dict[str, Any] = {"output_format": fmt}
    if req.output_compression is not None and fmt in ("jpeg", "webp"):
        fields["output_compression"] = req.output_compression
    if req.background is not None:
        fields["background"] = req.background
    if req.moderation is not None and not edit:
        fields["moderation"] = req.moderation
    if req.input_fidelity is not None and edit:
        fields["input_fidelity"] = req.input_fidelity
    if req.extras:
        fields["extra_body"] = {name: json.loads(raw) for name, raw in req.extras}
    return fields


def _file(call: ProviderCall, key: str | None, stem: str, param: str) -> FileTuple:
    data = call.uploads.get(key) if key is not None else None
    if data is None:
        raise ProviderRejected(f"The '{param}' upload is missing.", param=param)
    fmt = sniff(data)
    fmt = fmt if fmt in _UPLOAD_FORMATS else "png"
    return f"{stem}.{fmt}", data, CONTENT_TYPES[fmt]


def _edit_files(call: ProviderCall) -> dict[str, Any]:
    req = call.request
    if not req.images:
        raise ProviderRejected("An edit needs an image.", param="image")
    files = [_file(call, key, f"image-{i}", "image") for i, key in enumerate(req.images)]
    # GPT image models take a list (`image[]`); dall-e-2 one file in the `image` field.
    out: dict[str, Any] = {"image": files if _is_gpt(call) else files[0]}
    if req.mask is not None:
        out["mask"] = _file(call, req.mask, "mask", "mask")
    return out


async def _variation(client: openai.AsyncOpenAI, call: ProviderCall) -> ImagesResponse:
    if "variation" not in call.model.rules.operations:
        raise ProviderRejected(
            f"Variations need a dall-e-2 model; '{call.model.name}' cannot make them.",
            param="model",
        )
    image = _file(call, call.request.images[0] if call.request.images else None, "image", "image")
    with warnings.catch_warnings():  # the SDK marks the retired endpoint @deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        pending = client.images.create_variation(
            image=image,
            model=call.model.upstream,
            n=len(call.indexes),
            response_format="b64_json",
            size=call.request.size,  # type: ignore[arg-type]  # checked by normalize
        )
    return await pending


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(response: ImagesResponse) -> Usage | None:
    usage = response.usage
    if usage is None:
        return None
    details = usage.input_tokens_details
    text_in = _int(details.text_tokens) if details else _int(usage.input_tokens)
    image_in = _int(details.image_tokens) if details else 0
    return Usage(text_in=text_in, image_in=image_in, image_out=_int(usage.output_tokens))


# -- errors --------------------------------------------------------------------------------
def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    text = message if isinstance(message, str) else exc.message
    return f"{text} (request id {exc.request_id})" if exc.request_id else text


@contextmanager
def _translate_errors(provider: str, secret: str) -> Iterator[None]:
    """The SDK's exceptions -> the gateway's, once. The key never reaches a message, and
    the SDK exception is not chained (its request object holds the auth header)."""
    try:
        yield
    except openai.APITimeoutError:
        raise ProviderTimeout(f"The upstream provider '{provider}' timed out.") from None
    except openai.APIConnectionError as exc:
        raise ProviderUnavailable(
            f"The upstream provider '{provider}' could not be reached: {scrub(exc.message, secret)}"
        ) from None
    except openai.BadRequestError as exc:
        if exc.code in _SAFETY_CODES:
            message = scrub(_detail(exc), secret)
            raise ProviderRejected(message, param=exc.param, code=CONTENT_POLICY) from None
        raise ProviderRejected(
            f"The upstream provider '{provider}' rejected the request: "
            f"{scrub(_detail(exc), secret)}",
            param=exc.param,
        ) from None
    except openai.APIStatusError as exc:
        raise from_status(
            provider,
            exc.status_code,
            _detail(exc),
            secret=secret,
            retry_after=retry_after_seconds(exc.response.headers),
        ) from None
    except openai.APIError as exc:  # e.g. a response that does not parse
        raise ProviderError(
            f"The upstream provider '{provider}' sent an unusable answer: "
            f"{scrub(exc.message, secret)}",
            code="invalid_output",
        ) from None
