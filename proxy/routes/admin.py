"""Admin API: keys issued at run time, budgets, and spend reports. Needs the admin key.

GET    /admin/keys                   every key (never a secret or its hash)
POST   /admin/keys                   issue a key; the secret is shown in this answer only
DELETE /admin/keys/{name}            revoke
PUT    /admin/keys/{name}/budget     {"budget_usd": 25.0 | null, "window": "day"}
GET    /admin/spend?by=key|team|model|day[&since=<unix seconds>]
GET    /admin/orphans                calls whose process died mid-call, charged at their quote
POST   /admin/spend/{row_id}/refund  refund an orphaned row (idempotent)
POST   /admin/circuits/{model}/reset close a model's circuit (a hold set by an over-quote bill)
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from aiohttp import web

from policies.budget import Window, format_usd
from policies.config_schema import ConfigError
from policies.config_values import usd_to_micros
from policies.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from policies.ledger_models import KeyRecord
from proxy.app_keys import ACCOUNTS, AUTH, SERVICE, STORES
from proxy.authentication import Authenticator
from proxy.wire import read_json

__all__ = ["require_admin", "routes"]

routes = web.RouteTableDef()
_WINDOWS = ("day", "month", "total")
_HOW_TO_SET = (
    "Start the gateway with an admin key: 'IMAGEGATE_ADMIN_KEY=<a long secret> imagegate serve' "
    '(the shipped config.toml reads it: [auth] admin_key = "${IMAGEGATE_ADMIN_KEY}"; a config '
    "of your own, or none, needs that line), then run 'imagegate keys' with the same "
    "IMAGEGATE_ADMIN_KEY exported."
)


async def require_admin(request: web.Request) -> Authenticator:
    """The admin key, or nothing when the gateway is open and has no admin key configured."""
    auth = request.app[AUTH]
    authorization = request.headers.get("Authorization")
    if auth.is_admin(authorization):
        return auth
    if not auth.admin_key and not await auth.keys_exist():
        return auth
    raise AuthenticationFailed(
        "This route needs the admin key: 'Authorization: Bearer <[auth] admin_key>' "
        "('imagegate keys' sends $IMAGEGATE_ADMIN_KEY)."
        if auth.admin_key
        else "Admin routes are closed: API keys exist and no admin key is configured. "
        + _HOW_TO_SET
    )


@routes.get("/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    await require_admin(request)
    keys = await request.app[STORES].keys.list()
    return web.json_response({"object": "list", "data": [_key_json(k) for k in keys]})


@routes.post("/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    if not auth.admin_key:  # the first key would close the gateway and this API for good
        raise Conflict(
            "No admin key is configured, so no key can be issued here: the first key closes "
            "every image route to callers without a key, and this admin API with them. "
            + _HOW_TO_SET,
            code="admin_key_required",
        )
    body = await read_json(request)
    record = _key_from(body, auth.clock())
    secret = "igk-" + secrets.token_urlsafe(32)
    await request.app[STORES].keys.create(record, secret)
    auth.forget_key_cache()
    return web.json_response({**_key_json(record), "key": secret}, status=201)


@routes.delete("/admin/keys/{name}")
async def revoke_key(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    name = request.match_info["name"]
    if not await request.app[STORES].keys.revoke(name, auth.clock()):
        raise NotFound(f"No active key named '{name[:64]}'.")
    auth.forget_key_cache()
    return web.json_response({"name": name, "revoked": True})


@routes.put("/admin/keys/{name}/budget")
async def set_budget(request: web.Request) -> web.Response:
    auth = await require_admin(request)
    name = request.match_info["name"]
    body = await read_json(request)
    micros = _micros(body.get("budget_usd"), "budget_usd")
    window = _window(body.get("window", "day"), "window")
    if not await request.app[STORES].keys.set_budget(name, micros, window):
        raise NotFound(f"No key named '{name[:64]}'.")
    auth.forget_key_cache()  # kept keys carry their budget
    return web.json_response({"name": name, "budget_usd": _usd(micros), "window": window})


@routes.get("/admin/spend")
async def spend(request: web.Request) -> web.Response:
    await require_admin(request)
    return web.json_response(
        await spend_report(request.app, request.query.get("by", "key"), request.query.get("since"))
    )


async def spend_report(app: web.Application, by: str, since_text: str | None) -> dict[str, Any]:
    """Spend grouped `by`, every budget's state, the totals and the latest orphans: read
    through the ports (`LedgerReports`, `KeyStore`, `Ledger.budget_left`)."""
    if by not in ("key", "team", "model", "day"):
        raise InvalidRequest("'by' must be key, team, model or day.", param="by")
    since = _since(since_text)
    stores, accounts = app[STORES], app[ACCOUNTS]
    rows = await stores.reports.spend_by(by, since)  # type: ignore[arg-type]
    keys = await stores.keys.list(include_revoked=False)
    budgets = [b for k in keys if (b := k.budget_spec()) is not None]
    budgets += [*accounts.cost.team_budgets]
    if accounts.cost.global_budget is not None:
        budgets.append(accounts.cost.global_budget)
    usages = await stores.ledger.budget_left(budgets, accounts.clock()) if budgets else []
    totals = await stores.reports.totals(since)
    orphans = await stores.reports.orphans(limit=20)
    return {
        "by": by,
        "since": since,
        "rows": [
            {
                **r,
                "spend_usd": format_usd(r["spend_micros"]),
                "saved_usd": format_usd(r["saved_micros"]),
                "over_quote_usd": format_usd(r["over_quote_micros"]),
            }
            for r in rows
        ],
        "budgets": [
            {
                "scope": u.spec.scope,
                "name": u.spec.name,
                "window": u.spec.window,
                "limit_usd": format_usd(u.spec.limit_micros),
                "left_usd": format_usd(u.left_micros),
                "spent_usd": format_usd(u.spent_micros),
            }
            for u in usages
        ],
        "hit_ratio": totals["hit_ratio"],
        **_totals(totals),
        "orphans": [_orphan_json(o) for o in orphans],
    }


def _totals(totals: dict[str, int]) -> dict[str, Any]:
    return {
        "total_spend_usd": format_usd(totals["spend_micros"]),
        # billed by upstreams beyond their quotes: recorded, never charged to a budget
        "over_quote_usd": format_usd(totals["over_quote_micros"]),
        "orphaned": totals["orphaned"],
        "orphaned_usd": format_usd(totals["orphaned_micros"]),
        "refunded_usd": format_usd(totals["refunded_micros"]),
    }


def _orphan_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in row.items() if not k.endswith("_micros")},
        "charged_usd": format_usd(row["cost_micros"]),
        "refunded_usd": format_usd(row["refunded_micros"]),
        "refunded": row["refunded_micros"] > 0,
    }


@routes.get("/admin/orphans")
async def list_orphans(request: web.Request) -> web.Response:
    await require_admin(request)
    found = await request.app[STORES].reports.orphans(1000)
    return web.json_response({"object": "list", "data": [_orphan_json(o) for o in found]})


@routes.post("/admin/spend/{row_id}/refund")
async def refund(request: web.Request) -> web.Response:
    await require_admin(request)
    text = request.match_info["row_id"]
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest("The row id must be a ledger row number.", param="row_id")
    done = await request.app[STORES].reports.refund(int(text))
    if done is None:
        raise NotFound(f"No ledger row {text}.")
    amount, now = done
    return web.json_response(
        {"id": int(text), "refunded_usd": format_usd(amount), "already_refunded": not now}
    )


@routes.post("/admin/circuits/{model}/reset")
async def reset_circuit(request: web.Request) -> web.Response:
    """Close a model's circuit in every process (each loads the holds within 10 s)."""
    await require_admin(request)
    model = request.match_info["model"]
    router = request.app[SERVICE].router
    if model not in router.catalog.models:
        raise NotFound(f"No model named '{model[:64]}'.")
    was_held = await request.app[STORES].holds.release_hold(model)
    router.reset(model)
    return web.json_response({"model": model, "reset": True, "was_held": was_held})


def _key_from(body: Any, now: float) -> KeyRecord:
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise InvalidRequest(
            "'name' is required: a printable name of 1-64 characters.", param="name"
        )
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise InvalidRequest("'models' must be a list of model names.", param="models")
    team = body.get("team")
    if team is not None and not isinstance(team, str):
        raise InvalidRequest("'team' must be a string.", param="team")
    return KeyRecord(
        name=name,
        team=team or None,
        created=now,
        budget_micros=_micros(body.get("budget_usd"), "budget_usd"),
        budget_window=_window(body.get("budget_window", "day"), "budget_window"),
        requests_per_minute=_count(body.get("requests_per_minute"), "requests_per_minute"),
        images_per_minute=_count(body.get("images_per_minute"), "images_per_minute"),
        models=None if models is None else tuple(models),
    )


def _micros(value: Any, param: str) -> int | None:
    if value is None:
        return None
    try:
        return usd_to_micros(value, param)
    except ConfigError as exc:
        raise InvalidRequest(f"Invalid '{param}': {exc.problem}.", param=param) from None


def _window(value: Any, param: str) -> Window:
    if value not in _WINDOWS:
        raise InvalidRequest(f"'{param}' must be day, month or total.", param=param)
    return cast(Window, value)


def _count(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
        raise InvalidRequest(f"'{param}' must be a positive whole number.", param=param)
    return value


def _since(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest("'since' must be unix seconds.", param="since") from None


def _usd(micros: int | None) -> str | None:
    return None if micros is None else format_usd(micros)


def _key_json(key: KeyRecord) -> dict[str, Any]:
    return {
        "name": key.name,
        "team": key.team,
        "created": key.created,
        "revoked": key.revoked,
        "active": key.active,
        "budget_usd": _usd(key.budget_micros),
        "budget_window": key.budget_window,
        "requests_per_minute": key.requests_per_minute,
        "images_per_minute": key.images_per_minute,
        "models": list(key.models) if key.models is not None else None,
        "source": key.source,
    }
