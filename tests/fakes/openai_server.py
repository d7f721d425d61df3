"""`FakeOpenAI`: a loopback server that speaks the OpenAI Images API (WIRE.md §1).

    async with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)

Routes: `POST /v1/images/generations` (JSON), `POST /v1/images/edits` (multipart), `GET
/v1/models`, `GET /v1/models/{model}`, and `GET /files/<name>` (where DALL-E `url` results point).
The request rules, model table and token accounting are in `tests.fakes.openai_models`.

Behaviour worth knowing:
- JSON `null` counts as "not given"; unknown fields give 400 `unknown_parameter`, and so does
  `response_format` (or `style`) sent to a GPT image model, with WIRE.md's exact body.
- GPT image models always answer `b64_json` plus `background`, `output_format`, `size`,
  `quality` and `usage`; DALL-E answers `url` unless `response_format=b64_json`; dall-e-3 adds
  `revised_prompt`. Images are real PNG/JPEG/WEBP files of the plan's size, deterministic per
  (prompt, size, index) and, for edits, the sha256 of the input images.
- `stream=true` answers SSE: `partial_images` `*.partial_image` events, then `*.completed`,
  per image. Each completed event's usage covers its own image; input tokens are reported on
  the first one only, so the events sum to the non-streamed usage (plus 100 per partial).
- Edit file parts must be declared image/png, image/jpeg or image/webp, like the real API
  (`accept_octet_stream=True` relaxes that), and must decode; dall-e-2 wants one square PNG
  that has an alpha channel unless a mask is sent.
- `report_usage_next(output_tokens=...)` makes the next answers report that usage instead of
  the real accounting (a provider that bills more than it should).
- Every /v1 answer carries `x-request-id`, `openai-processing-ms`, `openai-version`,
  `openai-organization` and `x-ratelimit-*` headers; errors use the `{"error": {message, type,
  param, code}}` envelope. A wrong or missing bearer key gives 401 (`api_key=None` accepts any).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

from aiohttp import web

from . import images
from .base import REC, T0, Failure, FakeServer, FilePart, RecordedRequest
from .openai_models import (
    FAULT_BODIES,
    MODELS,
    RATELIMIT_REQUESTS,
    RATELIMIT_TOKENS,
    ImageModel,
    OpenAIError,
    Plan,
    coerce_form,
    usage,
    validate,
)

__all__ = ["FakeOpenAI"]

_MIMETYPES = ("image/png", "image/jpeg", "image/webp")


def _revised(prompt: str) -> str:
    return f"{prompt}, rendered in rich detail with a balanced composition and soft light."


class FakeOpenAI(FakeServer):
    """A fake `https://api.openai.com/v1` on 127.0.0.1.

    `api_key`: the bearer key to accept (None: any). `models`: replaces `MODELS`.
    `accept_octet_stream`: accept edit file parts declared application/octet-stream.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "sk-test",
        models: dict[str, ImageModel] | None = None,
        accept_octet_stream: bool = False,
        organization: str = "org-fake",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = dict(MODELS if models is None else models)
        self.accept_octet_stream = accept_octet_stream
        self.organization = organization
        self.request_ids: list[str] = []  # x-request-id of every /v1 answer, in order
        self._usages: list[list[Any]] = []  # scripted `usage` fields: [fields, times]

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`, for `AsyncOpenAI(base_url=...)`."""
        return f"{self.origin}/v1"

    def report_usage_next(self, times: int = 1, **fields: Any) -> None:
        """The next `times` GPT-image answers report these `usage` fields (e.g.
        `output_tokens=100_000`) over the real accounting; the images are unchanged."""
        self._usages.append([fields, times])

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model}", self._get_model)
        app.on_response_prepare.append(self._add_headers)

    # -- headers, errors, auth -----------------------------------------------------------
    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/v1/"):
            return
        request_id = response.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
        self.request_ids.append(request_id)
        used = len(self.request_ids)
        elapsed = int((time.monotonic() - request.get(T0, time.monotonic())) * 1000)
        response.headers.update(
            {
                "x-request-id": request_id,
                "openai-processing-ms": str(elapsed),
                "openai-version": "2020-10-01",
                "openai-organization": self.organization,
                "x-ratelimit-limit-requests": str(RATELIMIT_REQUESTS),
                "x-ratelimit-remaining-requests": str(max(0, RATELIMIT_REQUESTS - used)),
                "x-ratelimit-reset-requests": "120ms",
                "x-ratelimit-limit-tokens": str(RATELIMIT_TOKENS),
                "x-ratelimit-remaining-tokens": str(RATELIMIT_TOKENS - 100),
                "x-ratelimit-reset-tokens": "60ms",
            }
        )

    @staticmethod
    def _error(err: OpenAIError, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(err.body(), status=err.status, headers=headers)

    def _fault_response(self, fault: Failure, rec: RecordedRequest) -> web.Response:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["retry-after-ms"] = f"{fault.retry_after * 1000:g}"
            headers["retry-after"] = self.retry_after_seconds(fault) or "0"
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        if isinstance(fault.body, str | bytes):
            raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
            return web.Response(
                status=fault.status,
                body=raw,
                headers=headers,
                content_type=fault.content_type or "text/html",
            )
        if fault.body is not None:
            return web.json_response(fault.body, status=fault.status, headers=headers)
        message, type_, code = FAULT_BODIES.get(
            fault.status, FAULT_BODIES[500 if fault.status >= 500 else 400]
        )
        return self._error(OpenAIError(fault.status, message, code=code, type_=type_), headers)

    def _not_found(self, rec: RecordedRequest) -> web.Response:
        return self._error(OpenAIError(404, f"Invalid URL ({rec.method} {rec.path})"))

    def _auth_response(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return self._error(
                OpenAIError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            )
        if key != self.api_key:
            masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}"
            return self._error(
                OpenAIError(
                    401,
                    f"Incorrect API key provided: {masked}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
            )
        return None

    # -- routes ----------------------------------------------------------------------------
    async def _list_models(self, request: web.Request) -> web.Response:
        data = [self._model_json(name) for name in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.models:
            return self._error(
                OpenAIError(
                    404, f"The model '{name}' does not exist", param="model", code="model_not_found"
                )
            )
        return web.json_response(self._model_json(name))

    def _model_json(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": self.models[name].created,
            "owned_by": "system",
        }

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        rec: RecordedRequest = request[REC]
        if not isinstance(rec.json, dict):
            return self._error(
                OpenAIError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely "
                    "means you aren't using your HTTP library correctly. The OpenAI API expects a "
                    "JSON payload, but what was sent was not valid JSON.)",
                )
            )
        params = {k: v for k, v in rec.json.items() if v is not None}
        try:
            plan = validate(params, edit=False, models=self.models)
        except OpenAIError as err:
            return self._error(err)
        return await self._answer(request, plan, edit=False)

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        rec: RecordedRequest = request[REC]
        ctype = rec.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return self._error(
                OpenAIError(
                    400, f"Invalid Content-Type header ({ctype}), expected multipart/form-data."
                )
            )
        try:
            params = coerce_form(rec.form)
            for part in rec.files:
                if part.field not in ("image", "image[]", "mask"):
                    raise OpenAIError(
                        400,
                        f"Unknown parameter: '{part.field}'.",
                        param=part.field,
                        code="unknown_parameter",
                    )
            inputs = [p for p in rec.files if p.field in ("image", "image[]")]
            mask = next((p for p in rec.files if p.field == "mask"), None)
            if not inputs:
                raise OpenAIError(
                    400,
                    "Missing required parameter: 'image'.",
                    param="image",
                    code="missing_required_parameter",
                )
            plan = validate(params, edit=True, models=self.models)
            self._check_edit_files(plan, inputs, mask)
        except OpenAIError as err:
            return self._error(err)
        digest = hashlib.sha256(b"".join(p.data for p in inputs)).hexdigest()[:16]
        return await self._answer(
            request, plan, edit=True, salt=f"|{digest}", input_images=len(inputs)
        )

    def _check_edit_files(self, plan: Plan, inputs: list[FilePart], mask: FilePart | None) -> None:
        dalle = plan.spec.family == "dall-e-2"
        limit = 1 if dalle else 16
        if len(inputs) > limit:
            raise OpenAIError(
                400,
                f"Too many images: expected at most {limit}, got {len(inputs)}.",
                param="image",
                code="invalid_value",
            )
        first: tuple[int, int] | None = None
        for index, part in enumerate([*inputs, *([mask] if mask else [])], start=1):
            octet_ok = self.accept_octet_stream and part.content_type == "application/octet-stream"
            if part.content_type not in _MIMETYPES and not octet_ok:
                raise OpenAIError(
                    400,
                    f"Invalid file '{part.field}': unsupported mimetype "
                    f"('{part.content_type}'). Supported file formats are 'image/jpeg', "
                    "'image/png', and 'image/webp'.",
                    param=part.field,
                    code="unsupported_file_mimetype",
                )
            try:
                fmt, width, height, mode = images.image_info(part.data)
            except Exception:
                raise OpenAIError(
                    400,
                    f"Invalid image file or mode for image {index}, please check your image file.",
                    param=part.field,
                    code="invalid_image_file",
                ) from None
            max_bytes = 4 * 1024**2 if dalle or part.field == "mask" else 50 * 1024**2
            allowed = ("png",) if dalle or part.field == "mask" else ("png", "jpeg", "webp")
            if fmt not in allowed or part.size >= max_bytes:
                raise OpenAIError(
                    400,
                    f"Invalid image file for '{part.field}': must be "
                    f"{' or '.join(allowed)} and less than {max_bytes // 1024**2} "
                    "MB.",
                    param=part.field,
                    code="invalid_image_format",
                )
            if part.field == "mask":
                if (width, height) != first:
                    raise OpenAIError(
                        400,
                        "Invalid mask image: the mask must have the same dimensions as the image.",
                        param="mask",
                        code="invalid_value",
                    )
            elif first is None:
                first = (width, height)
                if dalle and width != height:
                    raise OpenAIError(
                        400, "Uploaded image must be square.", param="image", code="invalid_value"
                    )
                if dalle and mask is None and mode not in ("RGBA", "LA", "L"):
                    raise OpenAIError(
                        400,
                        f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {mode}.",
                        param="image",
                        code="invalid_value",
                    )

    # -- answers ---------------------------------------------------------------------------
    def _image(self, plan: Plan, index: int, salt: str) -> tuple[bytes, str]:
        fmt = plan.output_format if plan.spec.gpt else "png"
        key = f"{plan.prompt}|{plan.size}|{index}{salt}"
        transparent = plan.background == "transparent"
        return self.produce_image(key, plan.width, plan.height, fmt, transparent=transparent), fmt

    async def _answer(
        self,
        request: web.Request,
        plan: Plan,
        *,
        edit: bool,
        salt: str = "",
        input_images: int = 0,
    ) -> web.StreamResponse:
        if plan.stream:
            return await self._stream(
                request, plan, edit=edit, salt=salt, input_images=input_images
            )
        data: list[dict[str, Any]] = []
        fmt = "png"
        for index in range(plan.n):
            img, fmt = self._image(plan, index, salt)
            item: dict[str, Any] = {}
            if plan.b64:
                item["b64_json"] = base64.b64encode(img).decode()
            else:
                name = f"img-{hashlib.sha256(img).hexdigest()[:24]}.{fmt}"
                item["url"] = self.store_file(name, img)
            if plan.spec.family == "dall-e-3":
                item["revised_prompt"] = _revised(plan.prompt)
            data.append(item)
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if plan.spec.gpt:
            body.update(
                background=plan.background,
                output_format=fmt,
                size=plan.size,
                quality=plan.quality,
                usage=usage(plan, images=plan.n, input_images=input_images),
            )
            reported = self._pop(self._usages)
            if reported is not None:
                body["usage"] = {**body["usage"], **reported}
        return web.json_response(body)

    async def _stream(
        self, request: web.Request, plan: Plan, *, edit: bool, salt: str, input_images: int
    ) -> web.StreamResponse:
        prefix = "image_edit" if edit else "image_generation"
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        common = {
            "background": plan.background,
            "created_at": int(time.time()),
            "output_format": plan.output_format,
            "quality": plan.quality,
            "size": plan.size,
        }
        transparent = plan.background == "transparent"
        for index in range(plan.n):
            for partial in range(plan.partial_images):
                key = f"{plan.prompt}|{plan.size}|{index}{salt}|partial{partial}"
                img = images.render(
                    key, plan.width, plan.height, plan.output_format, transparent=transparent
                )
                await self._sse(
                    response,
                    f"{prefix}.partial_image",
                    {
                        "b64_json": base64.b64encode(img).decode(),
                        "partial_image_index": partial,
                        **common,
                    },
                )
            img, _ = self._image(plan, index, salt)
            await self._sse(
                response,
                f"{prefix}.completed",
                {
                    "b64_json": base64.b64encode(img).decode(),
                    **common,
                    "usage": usage(
                        plan,
                        images=1,
                        input_images=input_images,
                        partials=plan.partial_images,
                        with_input=index == 0,
                    ),
                },
            )
        await response.write_eof()
        return response

    @staticmethod
    async def _sse(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": event, **data})
        await response.write(f"event: {event}\ndata: {payload}\n\n".encode())
