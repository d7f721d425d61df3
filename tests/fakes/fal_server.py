"""`FakeFal`: a loopback server that speaks fal.ai's queue API (WIRE.md §4).

Routes (a model id is `owner/app[/subpath]`; the subpath is used on submit only, as on fal):
  POST /{owner}/{app}[/{sub}]                submit: 200 {request_id, response_url, status_url,
                                             cancel_url, queue_position}
  GET  /{owner}/{app}/requests/{id}/status   202 IN_QUEUE / IN_PROGRESS, 200 COMPLETED
  GET  /{owner}/{app}/requests/{id}          the result, or the request's error
  PUT  /{owner}/{app}/requests/{id}/cancel   202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED
Auth: `Authorization: Key <api_key>`, else 401 (`api_key=None` accepts any). Input is checked
like fal's FLUX endpoints: 422 `{"detail": [{loc, msg, type, url}]}`.

A request completes on its first status poll unless `queue_polls(n)` scripted n polls first
(IN_QUEUE, then IN_PROGRESS). `fail_request_next(status, detail)`: the result GET answers that
error; `content_policy_next()`: fal's 422 `content_policy_violation`; `nsfw_next()`: black
images flagged `has_nsfw_concepts`. Outputs: `output="http"` (`{origin}/files/...`), `"data"`
URIs, or `"https"` (`https://v3.fal.media/files/...` through `delivery_transport()`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from aiohttp import web

from . import images
from .base import REC, Failure, FakeServer, RecordedRequest
from .transport import LoopbackTransport

__all__ = ["IMAGE_SIZES", "MODELS", "FakeFal"]

IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
#: model id -> max num_inference_steps
MODELS: dict[str, int] = {"fal-ai/flux/schnell": 12, "fal-ai/flux/dev": 50}
_DOCS = "https://docs.fal.ai/errors#"


def _error(status: int, detail: Any, **headers: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers or None)


def _problem(name: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", name], "msg": msg, "type": kind, "url": _DOCS + kind}


@dataclass(slots=True)
class FalRequest:
    id: str
    model: str  # the full model id, subpath included
    input: dict[str, Any]
    polls_left: int
    status: str = "IN_QUEUE"
    error: tuple[int, Any] | None = None  # (status, detail) the result GET answers
    nsfw: bool = False
    canceled: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def validate(model: str, data: Any) -> list[dict[str, Any]]:
    """fal-style problems with a FLUX input (empty when valid); unknown keys are ignored."""
    if not isinstance(data, dict):
        return [_problem("body", "Input should be a valid dictionary", "dict_type")]
    problems = []
    if not isinstance(data.get("prompt"), str):
        problems.append(_problem("prompt", "Field required", "missing"))
    size = data.get("image_size", "landscape_4_3")
    if not (size in IMAGE_SIZES or (isinstance(size, dict) and {"width", "height"} <= set(size))):
        problems.append(_problem("image_size", f"Invalid image size {size!r}", "enum"))
    limits = {"num_images": (1, 4), "num_inference_steps": (1, MODELS[model]), "seed": (0, 2**32)}
    for name, (lo, hi) in limits.items():
        value = data.get(name, lo)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            problems.append(_problem(name, f"Input should be between {lo} and {hi}", "range"))
    if data.get("output_format", "jpeg") not in ("jpeg", "png"):
        problems.append(_problem("output_format", "Input should be 'jpeg' or 'png'", "enum"))
    if not isinstance(data.get("enable_safety_checker", True), bool):
        problems.append(_problem("enable_safety_checker", "Input should be a bool", "bool_type"))
    return problems


class FakeFal(FakeServer):
    """A fake `https://queue.fal.run` on 127.0.0.1."""

    def __init__(
        self,
        *,
        api_key: str | None = "fal_test",
        output: Literal["http", "data", "https"] = "http",
        delivery_host: str = "v3.fal.media",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.output = output
        self.delivery_host = delivery_host
        self.queue: dict[str, FalRequest] = {}
        self._polls: list[list[int]] = []  # [polls, times]
        self._errors: list[list[Any]] = []  # [(status, detail), times]
        self._nsfw = 0

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`: submit to `{base_url}/{model_id}`."""
        return self.origin

    # -- scripting -----------------------------------------------------------------------
    def queue_polls(self, polls: int, times: int = 1) -> None:
        """The next `times` requests answer `polls` status polls before COMPLETED."""
        self._polls.append([polls, times])

    def fail_request_next(self, status: int = 500, detail: Any = None, times: int = 1) -> None:
        """The next `times` requests complete with an error: their result GET answers
        `status` with `{"detail": detail}` (default: a runner error)."""
        self._errors.append([(status, detail or "Runner server error"), times])

    def content_policy_next(self, times: int = 1) -> None:
        msg = "The content could not be processed because it contained material flagged."
        self.fail_request_next(422, [_problem("prompt", msg, "content_policy_violation")], times)

    def nsfw_next(self, times: int = 1) -> None:
        """The next `times` requests answer black images flagged `has_nsfw_concepts`."""
        self._nsfw += times

    def delivery_transport(self) -> httpx.AsyncBaseTransport:
        """For `https` outputs: sends `https://<delivery_host>/...` to this fake."""
        return LoopbackTransport(self, self.delivery_host)

    def reset(self) -> None:
        super().reset()
        self._polls.clear()
        self._errors.clear()
        self._nsfw = 0

    # -- plumbing ------------------------------------------------------------------------
    def _fault_response(self, fault: Failure, rec: RecordedRequest) -> web.Response:
        headers = dict(fault.headers)
        retry_after = self.retry_after_seconds(fault)
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if isinstance(fault.body, str | bytes):
            return web.Response(
                status=fault.status,
                body=fault.body.encode() if isinstance(fault.body, str) else fault.body,
                headers=headers,
                content_type=fault.content_type or "text/html",
            )
        body = fault.body if fault.body is not None else {"detail": f"HTTP {fault.status}"}
        return web.json_response(body, status=fault.status, headers=headers)

    def _not_found(self, rec: RecordedRequest) -> web.Response:
        return _error(404, "Not Found")

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Key" or not key:
            return _error(401, "Missing authentication: use 'Authorization: Key <key>'.")
        if key != self.api_key:
            return _error(401, "Invalid key.")
        return None

    def _routes(self, app: web.Application) -> None:
        root = "/{owner}/{app}/requests/{id}"
        app.router.add_get(root + "/status", self._status)
        app.router.add_put(root + "/cancel", self._cancel)
        app.router.add_get(root, self._result)
        app.router.add_post("/{model:.+}", self._submit)

    def _lookup(self, request: web.Request) -> FalRequest | web.Response:
        """The request the path names (under its owner/app), or the error answer."""
        found = self.queue.get(request.match_info["id"])
        owner_app = f"{request.match_info['owner']}/{request.match_info['app']}/"
        if found is None or not (found.model + "/").startswith(owner_app):
            return _error(404, "Request not found")
        denied = self._denied(request)
        return found if denied is None else denied

    # -- routes --------------------------------------------------------------------------
    async def _submit(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        model = request.match_info["model"]
        if model not in MODELS:
            return _error(404, f"Application '{model}' not found")
        data = request[REC].json
        problems = validate(model, data)
        if problems:
            return _error(422, problems)
        rid = hashlib.sha256(f"fal:{len(self.queue)}".encode()).hexdigest()[:32]
        polls = self._pop(self._polls) or 0
        entry = FalRequest(rid, model, data, polls, error=self._pop(self._errors))
        if self._nsfw:
            self._nsfw, entry.nsfw = self._nsfw - 1, True
        self.queue[rid] = entry
        root = f"{self.origin}/{'/'.join(model.split('/')[:2])}/requests/{rid}"
        return web.json_response(
            {
                "request_id": rid,
                "response_url": root,
                "status_url": f"{root}/status",
                "cancel_url": f"{root}/cancel",
                "queue_position": 0,
            }
        )

    async def _status(self, request: web.Request) -> web.Response:
        entry = self._lookup(request)
        if isinstance(entry, web.Response):
            return entry
        if entry.status != "COMPLETED":
            if entry.polls_left > 0:  # IN_QUEUE on the first poll, then IN_PROGRESS
                entry.polls_left -= 1
                answer = {"status": entry.status, "queue_position": 0}
                entry.status = "IN_PROGRESS"
                return web.json_response(answer, status=202)
            self._complete(entry)
        result_url = self.origin + request.path.removesuffix("/status")
        return web.json_response({"status": "COMPLETED", "response_url": result_url})

    async def _result(self, request: web.Request) -> web.Response:
        entry = self._lookup(request)
        if isinstance(entry, web.Response):
            return entry
        if entry.status != "COMPLETED":
            return _error(400, "Request is still in progress")
        if entry.canceled:
            return _error(400, "Request was cancelled")
        if entry.error is not None:
            return _error(*entry.error)
        return web.json_response(entry.result)

    async def _cancel(self, request: web.Request) -> web.Response:
        entry = self._lookup(request)
        if isinstance(entry, web.Response):
            return entry
        if entry.status == "COMPLETED":
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        entry.status, entry.canceled = "COMPLETED", True
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    # -- results -------------------------------------------------------------------------
    def _complete(self, entry: FalRequest) -> None:
        entry.status = "COMPLETED"
        if entry.error is not None:
            return
        data = entry.input
        size = data.get("image_size", "landscape_4_3")
        width, height = (
            (size["width"], size["height"]) if isinstance(size, dict) else IMAGE_SIZES[size]
        )
        fmt = data.get("output_format", "jpeg")
        seed = data.get("seed", 42)
        out = []
        for index in range(data.get("num_images", 1)):
            key = f"{entry.model}|{data['prompt']}|{width}x{height}|{seed}|{index}"
            if entry.nsfw:
                img = images.blank(width, height, fmt)
                self.outputs.append(img)
            else:
                img = self.produce_image(key, width, height, fmt)
            url = self._publish(f"{entry.id}/out-{index}.{fmt}", img, fmt)
            out.append(
                {"url": url, "width": width, "height": height, "content_type": f"image/{fmt}"}
            )
        entry.result = {
            "images": out,
            "timings": {"inference": 0.25},
            "seed": seed,
            "has_nsfw_concepts": [entry.nsfw] * len(out),
            "prompt": data["prompt"],
        }

    def _publish(self, name: str, data: bytes, fmt: str) -> str:
        if self.output == "data":
            return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"
        if self.output == "https":
            self.files[f"files/{name}"] = data
            return f"https://{self.delivery_host}/files/{name}"
        return self.store_file(name, data)
