"""A/B tests of cached images: define experiments (admin), serve variants, count conversions.

POST   /admin/ab                       define: {"name", "variants": [{"id", "image": <sha256>
                                       | "request_key" + "index", "weight", "label", "control"}]}
GET    /admin/ab                       every experiment
GET    /admin/ab/{name}[?alpha=0.05]   the report: impressions, conversions, rates, z-tests
DELETE /admin/ab/{name}                drop it with its impressions and conversions
GET    /ab/{name}/{subject}[?inline=1] assign stickily, record the impression, 302 to
                                       /images/<sha256>.<ext> (or the bytes with inline=1)
POST   /ab/{name}/{subject}/convert    count the subject's conversion (409 if never shown)

The public routes need no key: pages and apps embed them. `setup_ab(app)` adds it all to an
app made by `create_app`; the experiments live in its `ExperimentStore` port.
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from policies.abtest import ExperimentReport, assign, report
from policies.errors import Conflict, GatewayError, InvalidRequest, NotFound
from policies.models import CONTENT_TYPES
from proxy.app_keys import AUTH, EVENTS, SETTINGS, STORES
from proxy.observability.events import ExperimentCreated, ExperimentImageRestored
from proxy.ports import ExperimentStore
from proxy.routes.ab_input import parse_alpha, parse_definition, resolve_images
from proxy.routes.admin import require_admin
from proxy.stores.experiments import Conversion, Experiment, ImageVariant
from proxy.wire import blob_url, read_json

__all__ = ["EXPERIMENTS", "report_json", "routes", "setup_ab"]

routes = web.RouteTableDef()
EXPERIMENTS = web.AppKey("experiments", ExperimentStore)

_SUBJECT_MAX: Final = 200
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
_NO_STORE: Final = "no-store"
_INERT: Final = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


def setup_ab(app: web.Application) -> None:
    """Add the A/B routes over the app's experiment store (closed with the other stores).
    Idempotent: an app that has them already is left as it is."""
    if EXPERIMENTS in app:
        return
    app[EXPERIMENTS] = app[STORES].experiments
    app.router.add_routes(routes)


# -- admin -------------------------------------------------------------------------------


@routes.post("/admin/ab")
async def create_experiment(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    body = await read_json(request)
    name, inputs = parse_definition(body)
    app = request.app
    variants, data = await resolve_images(inputs, app[STORES].blobs, app[STORES].entries)
    experiment = Experiment(name, auth.clock(), variants)
    if not await app[EXPERIMENTS].create(experiment, data):
        raise Conflict(
            f"An experiment named '{experiment.name}' exists already; "
            "DELETE /admin/ab/<name> first to redefine it.",
            param="name",
            code="experiment_exists",
        )
    app[EVENTS].emit(ExperimentCreated(experiment.name, len(data)))
    return web.json_response(_experiment_json(experiment), status=201)


@routes.get("/admin/ab")
async def list_experiments(request: web.Request) -> web.Response:
    await require_admin(request)
    found = await request.app[EXPERIMENTS].experiments()
    return web.json_response({"object": "list", "data": [_experiment_json(e) for e in found]})


@routes.get("/admin/ab/{name}")
async def experiment_report(request: web.Request) -> web.Response:
    await require_admin(request)
    alpha = parse_alpha(request.query.get("alpha"))
    experiment = await _experiment(request)
    counts = await request.app[EXPERIMENTS].counts(experiment.name)
    result = report(experiment.assignable, counts, alpha)
    return web.json_response(report_json(experiment, result))


@routes.delete("/admin/ab/{name}")
async def delete_experiment(request: web.Request) -> web.Response:
    await require_admin(request)
    name = request.match_info["name"]
    if not await request.app[EXPERIMENTS].delete(name):
        raise NotFound(f"No experiment named '{name[:64]}'.")
    return web.json_response({"name": name, "deleted": True})


# -- public ------------------------------------------------------------------------------


@routes.get("/ab/{name}/{subject}")
async def serve_variant(request: web.Request) -> web.Response:
    subject = _subject(request)
    inline = request.query.get("inline", "") not in ("", "0", "false")
    app, name = request.app, request.match_info["name"]
    now = None if request.method == "HEAD" else app[AUTH].clock()  # a HEAD is no impression
    variant, data = await _show(app, name, subject, inline, now)
    headers = {"Cache-Control": _NO_STORE, "X-Imagegate-Variant": variant.variant.id}
    if inline and data is not None:
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Content-Security-Policy"] = _INERT  # an SVG variant runs no script here
        return web.Response(body=data, content_type=CONTENT_TYPES[variant.format], headers=headers)
    base = app[SETTINGS].server.public_base_url
    headers["Location"] = blob_url(base, variant.image, variant.format)
    return web.Response(status=302, headers=headers)


async def _show(
    app: web.Application, name: str, subject: str, inline: bool, now: float | None
) -> tuple[ImageVariant, bytes | None]:
    """Assign, make sure the image can be served, record the impression (unless `now` is
    None). A subject shown a variant before keeps it."""
    store = app[EXPERIMENTS]
    experiment = _found(await store.get(name), name)
    chosen = _variant(experiment, assign(name, subject, experiment.assignable).id)
    data = await _ensure_image(app, chosen, inline)
    if now is None:
        shown = await store.seen(name, subject) or chosen.variant.id
    else:
        shown = (await store.impress(name, subject, chosen.variant.id, now)).variant
    if shown == chosen.variant.id:
        return chosen, data
    variant = _variant(experiment, shown)
    return variant, await _ensure_image(app, variant, inline)


@routes.post("/ab/{name}/{subject}/convert")
async def convert(request: web.Request) -> web.Response:
    subject = _subject(request)
    app, name = request.app, request.match_info["name"]
    converted = await _convert(app, name, subject, app[AUTH].clock())
    return web.json_response(
        {"experiment": name, "subject": subject, "variant": converted.variant,
         "counted": converted.first}
    )  # fmt: skip


async def _convert(app: web.Application, name: str, subject: str, now: float) -> Conversion:
    store = app[EXPERIMENTS]
    _found(await store.get(name), name)
    converted = await store.convert(name, subject, now)
    if converted.variant is None:
        raise Conflict(
            f"This subject never saw the experiment '{name}': "
            "GET /ab/<experiment>/<subject> first.",
            code="no_impression",
        )
    return converted


# -- helpers -----------------------------------------------------------------------------


def _subject(request: web.Request) -> str:
    subject = request.match_info["subject"]
    if not 1 <= len(subject) <= _SUBJECT_MAX or _CONTROL_CHARS.search(subject):
        raise InvalidRequest(
            f"A subject is 1-{_SUBJECT_MAX} characters without control characters.",
            param="subject",
        )
    return subject


async def _experiment(request: web.Request) -> Experiment:
    name = request.match_info["name"]
    return _found(await request.app[EXPERIMENTS].get(name), name)


def _found(experiment: Experiment | None, name: str) -> Experiment:
    if experiment is None:
        raise NotFound(f"No experiment named '{name[:64]}'.")
    return experiment


def _variant(experiment: Experiment, variant_id: str) -> ImageVariant:
    found = experiment.find(variant_id)
    assert found is not None, "assignments only name the experiment's own variants"
    return found


async def _ensure_image(
    app: web.Application, variant: ImageVariant, need_bytes: bool
) -> bytes | None:
    """Make sure the gateway can serve the variant's blob; its bytes when `need_bytes`.
    A blob the cache lost is put back from the experiment's own copy."""
    blobs = app[STORES].blobs
    if not need_bytes and await blobs.open(variant.image) is not None:
        return None
    data = await blobs.get(variant.image)
    if data is not None:
        return data
    copy = await app[EXPERIMENTS].image(variant.image)
    if copy is None:
        raise GatewayError(f"The image of variant '{variant.variant.id}' is no longer stored.")
    await blobs.put(copy)
    app[EVENTS].emit(ExperimentImageRestored(variant.image, variant.variant.id))
    return copy


def _experiment_json(experiment: Experiment) -> dict[str, Any]:
    return {
        "name": experiment.name,
        "created": experiment.created,
        "variants": [v.to_json() for v in experiment.variants],
    }


def report_json(experiment: Experiment, result: ExperimentReport) -> dict[str, Any]:
    """The report as `GET /admin/ab/{name}` answers it (rates as fractions, p-values raw)."""
    images = {v.variant.id: v for v in experiment.variants}
    return {
        **_experiment_json(experiment),
        "alpha": result.alpha,
        "control": result.control,
        "winner": result.winner,
        "significant": result.winner is not None,
        "message": result.message,
        "stats": [
            {
                "id": s.variant.id,
                "label": s.variant.label,
                "control": s.variant.id == result.control,
                "image": images[s.variant.id].image,
                "impressions": s.impressions,
                "conversions": s.conversions,
                "rate": s.rate,
            }
            for s in result.stats
        ],
        "comparisons": [
            {
                "variant": c.variant,
                "control": c.control,
                "z": c.result.z,
                "p_value": c.result.p_value,
                "lift": c.result.lift,
                "significant": c.result.significant,
                "alpha": c.alpha,
            }
            for c in result.comparisons
        ],
    }
