"""GET /openapi.json: the gateway's OpenAPI document (proxy/openapi.json, shipped in the package).

The image routes and their schemas are OpenAI's, copied with their names; README.md
("Compatibility with OpenAI's spec") lists where the gateway deliberately differs.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

__all__ = ["document", "routes"]

routes = web.RouteTableDef()


@cache
def document() -> bytes:
    """The document's bytes, read once from the package."""
    return resources.files("proxy").joinpath("openapi.json").read_bytes()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=document(),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
