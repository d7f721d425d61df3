"""A fake OpenAI Images upstream for the bench: fixed latency, fixed real PNGs, a call counter.

    python -m bench.upstream --port 9000 --latency-ms 200

`POST /v1/images/generations` sleeps `latency` and answers a GPT-image-shaped
`ImagesResponse` with `n` copies of the small PNG (~10 KB), or of the large one (~1.5 MB)
when the prompt contains `#large`. The bodies are encoded once at start-up, so the fake
costs almost nothing per call. `GET /_bench/stats` returns `{"calls": N, "prompts": M}`
(calls since the last `POST /_bench/reset`, and how many distinct prompts they had).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from bench.assets import SIZES, make_png

__all__ = ["LARGE_MARK", "Upstream", "build_upstream_app", "main", "response_body"]

LARGE_MARK = "#large"


@dataclass
class Upstream:
    latency_s: float
    images: dict[str, bytes]
    calls: int = 0
    prompts: Counter[str] = field(default_factory=Counter)
    _bodies: dict[tuple[str, int], bytes] = field(default_factory=dict)

    def body(self, name: str, n: int) -> bytes:
        cached = self._bodies.get((name, n))
        if cached is None:
            cached = response_body(self.images[name], n)
            self._bodies[(name, n)] = cached
        return cached


def response_body(png: bytes, n: int = 1, created: int = 1_767_225_600) -> bytes:
    """The JSON an OpenAI GPT image model answers, with `n` copies of `png`."""
    b64 = base64.b64encode(png).decode("ascii")
    body = {
        "created": created,
        "data": [{"b64_json": b64} for _ in range(n)],
        "background": "opaque",
        "output_format": "png",
        "size": "1024x1024",
        "quality": "low",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 272 * n,
            "total_tokens": 10 + 272 * n,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
        },
    }
    return json.dumps(body).encode()


UPSTREAM = web.AppKey("upstream", Upstream)


async def _generations(request: web.Request) -> web.Response:
    state = request.app[UPSTREAM]
    raw = await request.read()
    try:
        params = json.loads(raw)
        prompt = str(params.get("prompt", ""))
        n = int(params.get("n") or 1)
    except (ValueError, TypeError, AttributeError):
        return web.json_response({"error": {"message": "bad json", "type": "x"}}, status=400)
    state.calls += 1
    state.prompts[prompt] += 1
    if state.latency_s > 0:
        await asyncio.sleep(state.latency_s)
    name = "large" if LARGE_MARK in prompt else "small"
    return web.Response(
        body=state.body(name, max(1, min(n, 10))),
        content_type="application/json",
        headers={"x-request-id": f"req_bench_{state.calls}", "openai-processing-ms": "1"},
    )


async def _stats(request: web.Request) -> web.Response:
    state = request.app[UPSTREAM]
    return web.json_response({"calls": state.calls, "prompts": len(state.prompts)})


async def _reset(request: web.Request) -> web.Response:
    state = request.app[UPSTREAM]
    state.calls = 0
    state.prompts.clear()
    return web.json_response({"calls": 0})


async def _models(request: web.Request) -> web.Response:
    data = [{"id": "gpt-image-1.5", "object": "model", "created": 0, "owned_by": "system"}]
    return web.json_response({"object": "list", "data": data})


def build_upstream_app(latency_s: float, images: dict[str, bytes] | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = Upstream(latency_s, images or {k: make_png(v) for k, v in SIZES.items()})
    app.router.add_post("/v1/images/generations", _generations)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/_bench/stats", _stats)
    app.router.add_post("/_bench/reset", _reset)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    app = build_upstream_app(args.latency_ms / 1000)
    print(f"fake upstream: images ready in {time.perf_counter() - started:.2f}s", flush=True)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
