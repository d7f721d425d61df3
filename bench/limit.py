"""The limit: a bare aiohttp app that returns the gateway's exact response bytes from memory.

    python -m bench.limit --port 9001 --dir BODIES [--reuse-port]

`BODIES` holds `post-<case>.json` (the exact JSON body of one of the gateway's hits,
served for `POST /<case>`) and `blob-<name>` (served for `GET /images/<name>`). A handler
reads the request body (as any POST handler must) and returns the stored bytes: no parsing,
no lookup beyond one dict, no logging. N processes started with `--reuse-port` share the
port (SO_REUSEPORT), like `imagegate serve --workers N`.

With `--upstream URL` (the mixed scenario), a `POST /mix-miss-...` first sends its body to
the fake upstream and reads the answer, as a bare pass-through would, then returns the
stored bytes of that kind: a miss costs the limit the upstream's round trip and no more.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientSession, web

__all__ = ["build_limit_app", "load_bodies", "main"]

POSTS = web.AppKey("posts", dict[str, bytes])
BLOBS = web.AppKey("blobs", dict[str, bytes])
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", ClientSession)


async def _post(request: web.Request) -> web.Response:
    data = await request.read()
    case = request.match_info["case"]
    body = request.app[POSTS].get(case)
    if body is None:
        raise web.HTTPNotFound()
    if case.startswith("mix-miss-") and UPSTREAM in request.app:
        async with request.app[SESSION].post(
            request.app[UPSTREAM], data=data, headers={"Content-Type": "application/json"}
        ) as resp:
            await resp.read()
    return web.Response(body=body, content_type="application/json")


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with ClientSession() as session:
        app[SESSION] = session
        yield


async def _blob(request: web.Request) -> web.Response:
    body = request.app[BLOBS].get(request.match_info["name"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="image/png")


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def build_limit_app(
    posts: dict[str, bytes], blobs: dict[str, bytes], upstream: str | None = None
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[POSTS] = posts
    app[BLOBS] = blobs
    if upstream:
        app[UPSTREAM] = upstream
        app.cleanup_ctx.append(_session)
    app.router.add_get("/healthz", _health)
    app.router.add_post("/{case}", _post)
    app.router.add_get("/images/{name}", _blob)
    return app


def load_bodies(directory: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    posts: dict[str, bytes] = {}
    blobs: dict[str, bytes] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("post-") and path.suffix == ".json":
            posts[path.stem.removeprefix("post-")] = path.read_bytes()
        elif path.name.startswith("blob-"):
            blobs[path.name.removeprefix("blob-")] = path.read_bytes()
    return posts, blobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--upstream", default=None, help="URL a mix-miss POST calls first")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, like imagegate")
    args = parser.parse_args(argv)
    posts, blobs = load_bodies(args.dir)
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        build_limit_app(posts, blobs, args.upstream),
        loop=loop,
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port or None,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
