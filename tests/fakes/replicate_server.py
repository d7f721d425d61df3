"""`FakeReplicate`: a loopback server that speaks Replicate's predictions API (WIRE.md §3).

    async with FakeReplicate() as fake:
        client = replicate.Client(api_token="r8_test", base_url=fake.base_url)
        out = await client.async_run("black-forest-labs/flux-schnell", input={"prompt": "x"})

`base_url` has no `/v1`: the SDK writes `/v1/...` itself. Routes:
`POST /v1/models/{owner}/{name}/predictions`, `POST /v1/predictions` (`version` = 64-hex id,
`owner/name:id` or `owner/name`), `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`,
`GET /v1/models/{owner}/{name}`, `GET /v1/models/{owner}/{name}/versions/{id}`, `GET /files/...`.

Lifecycle: a prediction's work takes `work_seconds` of wall time (default 0). Without a `Prefer`
header, create answers 201 `starting` and a later GET shows the result. With `Prefer: wait[=N]`
(N 1-60, bare = 60) create holds until the work is done and answers the final state (or
`sync_status="processing"`: `processing` with the output already set, as the real sync API
does); if the work outlasts N it answers `starting` after N seconds. `processing_then_succeed`
and `fail_prediction_next` script the next predictions. Outputs are `data:` URIs by default,
`https://replicate.delivery/...` with `output="https"` (reach them with `delivery_transport()`),
or `http://127.0.0.1:<port>/files/...` with `output="http"`. Errors are
`application/problem+json` `{"title", "detail", "status"}`; a wrong token gives 401.
Models, input validation and the aspect-ratio table are in `tests.fakes.replicate_models`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from aiohttp import web

from . import images
from .base import REC, Failure, FakeServer, RecordedRequest
from .replicate_models import MODELS, ReplicateModel, check_input, openapi_schema, out_size
from .transport import LoopbackTransport

__all__ = ["FakeReplicate"]

TERMINAL = ("succeeded", "failed", "canceled")
_PREFER = re.compile(r"^wait(=([1-9]|[1-9][0-9]|60))?$")
_DETAILS: dict[int, tuple[str, str]] = {
    400: ("Bad request", "The request could not be processed."),
    401: ("Unauthenticated", "You did not pass a valid authentication token"),
    402: ("Payment required", "You have insufficient credit to run this model."),
    404: ("Not found", "The requested resource could not be found."),
    422: ("Unprocessable entity", "The request could not be processed."),
    429: ("Too Many Requests", "Request was throttled. Your rate limit resets in ~30s."),
    500: ("Internal server error", "An unexpected error occurred."),
    503: ("Service unavailable", "The service is temporarily unavailable."),
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problem(
    status: int, detail: str | None = None, title: str | None = None, **extra: Any
) -> web.Response:
    """An RFC 7807 answer, as Replicate sends its errors."""
    default_title, default_detail = _DETAILS.get(status, ("Error", "An error occurred."))
    body = {
        "title": title or default_title,
        "detail": detail or default_detail,
        "status": status,
        **extra,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


@dataclass(slots=True)
class Prediction:
    id: str
    spec: ReplicateModel
    input: dict[str, Any]
    seq: int
    created: float
    done_at: float  # time.monotonic() when the work is done
    polls_left: int | None = None  # scripted: GETs that still answer "processing"
    fail_error: str | None = None
    status: str = "starting"
    started: float | None = None
    completed: float | None = None
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class FakeReplicate(FakeServer):
    """A fake `https://api.replicate.com` on 127.0.0.1.

    `api_token`: the token to accept (`Bearer` or legacy `Token`; None accepts any).
    `output`: "data" | "https" | "http" URLs for output files. `work_seconds`: wall time each
    prediction takes. `sync_status`: what a `Prefer: wait` create answers when done in time.
    """

    def __init__(
        self,
        *,
        api_token: str | None = "r8_test",  # noqa: S107
        output: Literal["data", "https", "http"] = "data",
        work_seconds: float = 0.0,
        sync_status: Literal["succeeded", "processing"] = "succeeded",
        models: dict[str, ReplicateModel] | None = None,
        delivery_host: str = "replicate.delivery",
    ) -> None:
        super().__init__()
        self.api_token = api_token
        self.output = output
        self.work_seconds = work_seconds
        self.sync_status = sync_status
        self.models = dict(MODELS if models is None else models)
        self.delivery_host = delivery_host
        self.predictions: dict[str, Prediction] = {}
        self._fail_queue: list[list[Any]] = []  # [error, times]
        self._slow_queue: list[list[int]] = []  # [polls, times]

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`, with no `/v1`, for `replicate.Client(base_url=...)`."""
        return self.origin

    # -- scripting -----------------------------------------------------------------------
    def fail_prediction_next(self, error: str = "NSFW content detected", times: int = 1) -> None:
        """The next `times` predictions end `failed` with `error` (the SDK: ModelError)."""
        self._fail_queue.append([error, times])

    def processing_then_succeed(self, polls: int = 1, times: int = 1) -> None:
        """The next `times` predictions answer create with `starting` (even under `Prefer:
        wait`, as if the window ran out), then `polls` GETs with `processing`, then the final
        state."""
        self._slow_queue.append([polls, times])

    def delivery_transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport (async and sync) for `replicate.Client(transport=...)` or any
        httpx client: `https://<delivery_host>/...` goes to this fake, the rest goes out as is."""
        return LoopbackTransport(self, self.delivery_host)

    def reset(self) -> None:
        super().reset()
        self._fail_queue.clear()
        self._slow_queue.clear()

    # -- errors, auth --------------------------------------------------------------------
    def _fault_response(self, fault: Failure, rec: RecordedRequest) -> web.Response:
        headers = dict(fault.headers)
        retry_after = self.retry_after_seconds(fault)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if fault.body is None:
            response = problem(fault.status)
        elif isinstance(fault.body, str | bytes):
            raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
            response = web.Response(
                status=fault.status, body=raw, content_type=fault.content_type or "text/html"
            )
        else:
            response = web.Response(
                status=fault.status,
                text=json.dumps(fault.body),
                content_type=fault.content_type or "application/problem+json",
            )
        response.headers.update(headers)
        return response

    def _not_found(self, rec: RecordedRequest) -> web.Response:
        return problem(404)

    def _auth_response(self, request: web.Request) -> web.Response | None:
        if self.api_token is None:
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token:
            return problem(401, "You did not pass an authentication token")
        if token != self.api_token:
            return problem(401)
        return None

    # -- routes --------------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create_for_model)
        app.router.add_post("/v1/predictions", self._create_for_version)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/v1/models/{owner}/{name}", self._get_model)
        app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", self._get_version)

    def _model(self, request: web.Request) -> ReplicateModel | None:
        return self.models.get(f"{request.match_info['owner']}/{request.match_info['name']}")

    async def _create_for_model(self, request: web.Request) -> web.Response:
        spec = self._model(request)
        if spec is None:
            return problem(404)
        return await self._create(request, spec)

    async def _create_for_version(self, request: web.Request) -> web.Response:
        body = request[REC].json
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str):
            return problem(422, "- version: version is required", "Input validation failed")
        ref, _, vid = version.rpartition(":") if ":" in version else ("", "", version)
        for spec in self.models.values():
            if vid in (spec.version, spec.ref) and ref in ("", spec.ref):
                return await self._create(request, spec)
        return problem(
            422,
            "The specified version does not exist (or perhaps you don't have "
            "permission to use it?)",
            "Invalid version or not permitted",
        )

    async def _create(self, request: web.Request, spec: ReplicateModel) -> web.Response:
        body = request[REC].json
        data = body.get("input") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return problem(422, "- input: input is required", "Input validation failed")
        prefer = request.headers.get("Prefer", "").strip()
        if prefer and not _PREFER.match(prefer):
            return problem(400, f"Invalid Prefer header: {prefer!r}")
        invalid = check_input(spec, data)
        if invalid:
            detail = "".join(f"- {p['field']}: {p['description']}\n" for p in invalid)
            return problem(422, detail, "Input validation failed", invalid_fields=invalid)
        seq = len(self.predictions) + 1
        pid = hashlib.sha256(f"prediction:{seq}".encode()).hexdigest()[:26]
        now = time.time()
        pred = Prediction(
            pid,
            spec,
            data,
            seq,
            now,
            time.monotonic() + self.work_seconds,
            polls_left=self._pop(self._slow_queue),
            fail_error=self._pop(self._fail_queue),
        )
        self.predictions[pred.id] = pred
        headers = {"ratelimit-remaining": str(max(0, 600 - seq)), "ratelimit-reset": "1"}
        if prefer:
            headers["Preference-Applied"] = prefer
            if pred.polls_left is None:
                wait = int(prefer.partition("=")[2] or 60)
                remaining = pred.done_at - time.monotonic()
                await asyncio.sleep(max(0.0, min(remaining, wait)))
                self._advance(pred, poll=False)
        answer = self._json(pred)
        if prefer and pred.status == "succeeded" and self.sync_status == "processing":
            answer["status"] = "processing"
            answer.pop("completed_at", None)
        return web.Response(
            status=201,
            text=json.dumps(answer),
            headers=headers,
            content_type="application/json",
            charset="UTF-8",
        )

    async def _get(self, request: web.Request) -> web.Response:
        pred = self.predictions.get(request.match_info["id"])
        if pred is None:
            return problem(404)
        self._advance(pred, poll=True)
        return web.json_response(self._json(pred))

    async def _cancel(self, request: web.Request) -> web.Response:
        pred = self.predictions.get(request.match_info["id"])
        if pred is None:
            return problem(404)
        if pred.status not in TERMINAL:
            pred.status, pred.completed = "canceled", time.time()
            pred.logs += "Prediction canceled.\n"
        return web.json_response(self._json(pred))

    async def _get_model(self, request: web.Request) -> web.Response:
        spec = self._model(request)
        if spec is None:
            return problem(404)
        return web.json_response(
            {
                "url": f"https://replicate.com/{spec.ref}",
                "owner": spec.owner,
                "name": spec.name,
                "description": f"Fake {spec.name}",
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": len(self.predictions),
                "cover_image_url": None,
                "default_example": None,
                "latest_version": self._version_json(spec),
            }
        )

    async def _get_version(self, request: web.Request) -> web.Response:
        spec = self._model(request)
        if spec is None or request.match_info["version"] != spec.version:
            return problem(404)
        return web.json_response(self._version_json(spec))

    @staticmethod
    def _version_json(spec: ReplicateModel) -> dict[str, Any]:
        return {
            "id": spec.version,
            "created_at": "2024-08-01T00:00:00.000000Z",
            "cog_version": spec.cog_version,
            "openapi_schema": openapi_schema(spec),
        }

    # -- lifecycle -------------------------------------------------------------------------
    def _advance(self, pred: Prediction, *, poll: bool) -> None:
        if pred.status in TERMINAL:
            return
        if pred.polls_left is not None:
            if not poll:
                return
            if pred.polls_left > 0:
                pred.polls_left -= 1
                self._start(pred)
                return
        elif time.monotonic() < pred.done_at:
            if poll:
                self._start(pred)
            return
        self._finish(pred)

    def _seed(self, pred: Prediction) -> int:
        seed = pred.input.get("seed")
        return seed if isinstance(seed, int) else (pred.seq * 2_654_435_761) % 2_147_483_647

    def _start(self, pred: Prediction) -> None:
        if pred.started is None:
            pred.status, pred.started = "processing", time.time()
            pred.logs += f"Using seed: {self._seed(pred)}\nRunning prediction...\n"

    def _finish(self, pred: Prediction) -> None:
        self._start(pred)
        pred.completed = time.time()
        count = pred.input.get("num_outputs", 1) if "num_outputs" in pred.spec.inputs else 1
        predict_time = round(pred.spec.predict_seconds * count, 6)
        pred.metrics = {
            "predict_time": predict_time,
            "total_time": round(pred.completed - pred.created, 6),
        }
        if pred.fail_error is not None:
            pred.status, pred.error = "failed", pred.fail_error
            pred.logs += f"{pred.fail_error}\n"
            return
        urls = [self._render(pred, index) for index in range(count)]
        pred.output = urls if pred.spec.list_output else urls[0]
        pred.metrics["image_count"] = count
        pred.status = "succeeded"

    def _render(self, pred: Prediction, index: int) -> str:
        ext = pred.input.get("output_format", pred.spec.default_format)
        if "output_format" not in pred.spec.inputs:
            ext = pred.spec.default_format
        width, height = out_size(pred.spec, pred.input)
        key = f"{pred.spec.ref}|{pred.input.get('prompt')}|{width}x{height}|{self._seed(pred)}"
        data = self.produce_image(f"{key}|{index}", width, height, ext)
        mime = images.MIME_TYPES[ext]
        if self.output == "data":
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        name = f"xezq/{pred.id}/out-{index}.{ext}"
        self.files[name] = data
        if self.output == "https":
            return f"https://{self.delivery_host}/{name}"
        return f"{self.origin}/files/{name}"

    def _json(self, pred: Prediction) -> dict[str, Any]:
        get = f"{self.origin}/v1/predictions/{pred.id}"
        answer: dict[str, Any] = {
            "id": pred.id,
            "model": pred.spec.ref,
            "version": pred.spec.version,
            "input": pred.input,
            "logs": pred.logs,
            "output": pred.output,
            "data_removed": False,
            "error": pred.error,
            "status": pred.status,
            "created_at": _iso(pred.created),
            "urls": {
                "get": get,
                "cancel": f"{get}/cancel",
                "web": f"https://replicate.com/p/{pred.id}",
            },
        }
        if pred.started is not None:
            answer["started_at"] = _iso(pred.started)
        if pred.completed is not None:
            answer["completed_at"] = _iso(pred.completed)
        if pred.metrics:
            answer["metrics"] = pred.metrics
        return answer
