"""A/B serving over HTTP: experiments from cached images, sticky variants, conversions, the
report on a simulated audience and on known numbers, and durability across a restart."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from policies.abtest import two_proportion_test
from proxy.app import create_app
from proxy.app_keys import STORES
from proxy.config_cost import parse_cost
from proxy.routes.ab import EXPERIMENTS, setup_ab
from proxy.stores.async_stores import ThreadedBlobStore
from proxy.stores.build import build_stores
from proxy.stores.memory import MemoryBlobStore
from tests.conftest import CountingProvider

ADMIN = "admin-secret-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class AbGateway:
    server: TestServer
    http: aiohttp.ClientSession

    @property
    def root(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    @property
    def app(self):
        return self.server.app

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        kw.setdefault("allow_redirects", False)
        async with self.http.request(method, self.root + path, **kw) as got:
            body = await got.json() if got.content_type == "application/json" else await got.read()
            return got.status, got.headers, body

    async def admin(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = await self.call(method, path, headers=AUTH, **kw)
        return status, body

    async def put_image(self, color: str, fmt: str = "PNG") -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), color).save(buffer, fmt)
        return await self.app[STORES].blobs.put(buffer.getvalue())

    async def close(self) -> None:
        await self.http.close()
        await self.server.close()


async def start_ab(settings, clock, **kw: Any) -> AbGateway:
    settings = replace(settings, cost=parse_cost({"auth": {"admin_key": ADMIN}}))
    app = create_app(settings, providers={"placeholder": CountingProvider()}, clock=clock, **kw)
    setup_ab(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return AbGateway(server, aiohttp.ClientSession())


@pytest.fixture
async def ab(settings, clock) -> AsyncIterator[AbGateway]:
    gw = await start_ab(settings, clock)
    yield gw
    await gw.close()


async def define(gw: AbGateway, name: str, *variants: dict[str, Any]) -> dict[str, Any]:
    status, body = await gw.admin("POST", "/admin/ab", json={"name": name, "variants": variants})
    assert status == 201, body
    return body


async def two_images(gw: AbGateway) -> tuple[str, str]:
    return await gw.put_image("navy"), await gw.put_image("orange", "JPEG")


async def hero(gw: AbGateway, name: str = "hero") -> tuple[str, str]:
    a, b = await two_images(gw)
    await define(
        gw, name, {"id": "A", "image": a, "label": "calm"}, {"id": "B", "image": b, "label": "bold"}
    )
    return a, b


# -- the required scenarios ------------------------------------------------------------------


async def test_a_simulated_audience_picks_the_variant_that_converts_more(ab):
    await hero(ab, "simulated")
    rng = random.Random(1234)
    rates = {"A": 0.08, "B": 0.12}
    converts = {f"visitor-{i}": rng.random() for i in range(4_000)}
    gate = asyncio.Semaphore(16)

    async def visit(subject: str, draw: float) -> None:
        async with gate:
            status, headers, _ = await ab.call("GET", f"/ab/simulated/{subject}")
            assert status == 302
            if draw < rates[headers["X-Imagegate-Variant"]]:
                status, _, body = await ab.call("POST", f"/ab/simulated/{subject}/convert")
                assert status == 200 and body["counted"] is True

    await asyncio.gather(*(visit(s, d) for s, d in converts.items()))
    status, got = await ab.admin("GET", "/admin/ab/simulated")
    assert status == 200
    stats = {s["id"]: s for s in got["stats"]}
    assert stats["A"]["impressions"] + stats["B"]["impressions"] == 4_000
    assert abs(stats["B"]["impressions"] / 4_000 - 0.5) < 0.03
    assert stats["B"]["rate"] > stats["A"]["rate"]
    assert got["winner"] == "B" and got["significant"] is True
    assert got["message"].startswith("B wins")
    (comparison,) = got["comparisons"]
    expected = two_proportion_test(
        stats["A"]["conversions"],
        stats["A"]["impressions"],
        stats["B"]["conversions"],
        stats["B"]["impressions"],
    )
    assert comparison["p_value"] == pytest.approx(expected.p_value) and expected.p_value < 0.05


async def test_the_report_on_known_numbers(ab, settings):
    await hero(ab, "known")
    # 1000 subjects saw A (200 converted), 1000 saw B (250 converted), written in one go
    db = sqlite3.connect(settings.data_dir / "experiments.sqlite3")
    with db:
        for variant, converted in (("A", 200), ("B", 250)):
            rows = [("known", f"{variant}{i}", variant, 1.0) for i in range(1000)]
            db.executemany("INSERT INTO impressions VALUES (?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO conversions VALUES (?, ?, ?, ?)", rows[:converted])
    db.close()
    status, got = await ab.admin("GET", "/admin/ab/known")
    assert status == 200
    assert [(s["id"], s["impressions"], s["conversions"], s["rate"]) for s in got["stats"]] == [
        ("A", 1000, 200, 0.2),
        ("B", 1000, 250, 0.25),
    ]
    (c,) = got["comparisons"]
    assert c["z"] == pytest.approx(2.6774, abs=1e-4)  # B converts better: z > 0, as lift
    assert c["p_value"] == pytest.approx(0.00742, abs=5e-5)
    assert c["lift"] == pytest.approx(0.25) and c["significant"] is True
    assert got["winner"] == "B" and got["control"] == "A"
    status, strict = await ab.admin("GET", "/admin/ab/known?alpha=0.005")
    assert strict["winner"] is None and "No significant winner yet" in strict["message"]


async def test_assignment_is_sticky_and_counts_each_subject_once(ab):
    a, b = await hero(ab)
    first: dict[str, str] = {}
    for _ in range(3):
        for i in range(40):
            status, headers, _ = await ab.call("GET", f"/ab/hero/user-{i}")
            assert status == 302 and headers["Cache-Control"] == "no-store"
            first.setdefault(f"user-{i}", headers["Location"])
            assert headers["Location"] == first[f"user-{i}"]
    assert set(first.values()) == {f"/images/{a}.png", f"/images/{b}.jpg"}
    *_, once = await ab.call("POST", "/ab/hero/user-1/convert")
    *_, twice = await ab.call("POST", "/ab/hero/user-1/convert")
    assert (once["counted"], twice["counted"]) == (True, False)
    status, headers, _ = await ab.call("HEAD", "/ab/hero/link-preview-bot")
    assert status == 302 and headers["Location"] in first.values()  # shown, not counted
    _, got = await ab.admin("GET", "/admin/ab/hero")
    assert sum(s["impressions"] for s in got["stats"]) == 40
    assert sum(s["conversions"] for s in got["stats"]) == 1


async def test_restart_keeps_experiments_impressions_and_assignments(settings, clock):
    gw = await start_ab(settings, clock)
    try:
        await hero(gw)
        seen = {}
        for i in range(20):
            _, headers, _ = await gw.call("GET", f"/ab/hero/s{i}")
            seen[f"s{i}"] = headers["X-Imagegate-Variant"]
        await gw.call("POST", "/ab/hero/s3/convert")
        _, before = await gw.admin("GET", "/admin/ab/hero")
    finally:
        await gw.close()  # closes the store (cleanup)
    again = await start_ab(settings, clock)
    try:
        _, after = await again.admin("GET", "/admin/ab/hero")
        assert after == before
        for subject, variant in seen.items():
            _, headers, _ = await again.call("GET", f"/ab/hero/{subject}")
            assert headers["X-Imagegate-Variant"] == variant
        status, _, body = await again.call("POST", "/ab/hero/s5/convert")
        assert status == 200 and body["variant"] == seen["s5"]
    finally:
        await again.close()


# -- serving -----------------------------------------------------------------------------------


async def test_redirect_leads_to_the_image_and_inline_returns_it(ab):
    a, b = await hero(ab)
    status, headers, _ = await ab.call("GET", "/ab/hero/alice")
    assert status == 302
    status, _, data = await ab.call("GET", headers["Location"])
    assert status == 200 and hashlib.sha256(data).hexdigest() in (a, b)
    status, inline_headers, inline = await ab.call("GET", "/ab/hero/alice?inline=1")
    assert status == 200 and inline == data
    assert inline_headers["Content-Type"] in ("image/png", "image/jpeg")
    assert inline_headers["X-Imagegate-Variant"] == headers["X-Imagegate-Variant"]
    assert "sandbox" in inline_headers["Content-Security-Policy"]


async def test_unknown_experiments_unseen_subjects_and_bad_subjects(ab):
    await hero(ab)
    status, _, body = await ab.call("GET", "/ab/nope/alice")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, body = await ab.call("POST", "/ab/nope/alice/convert")
    assert status == 404
    status, _, body = await ab.call("POST", "/ab/hero/never-seen/convert")
    assert status == 409 and body["error"]["code"] == "no_impression"
    status, _, body = await ab.call("GET", "/ab/hero/" + "x" * 201)
    assert status == 400 and body["error"]["param"] == "subject"
    status, _, _ = await ab.call("GET", "/ab/hero/" + "x" * 200)
    assert status == 302


async def test_a_variant_from_a_request_key_and_index(ab):
    body = {
        "model": "dall-e-2",
        "prompt": "a red kite",
        "size": "256x256",
        "n": 2,
        "response_format": "b64_json",
    }
    status, headers, made = await ab.call("POST", "/v1/images/generations", json=body)
    assert status == 200
    key = headers["X-Cache-Key"]
    shas = [hashlib.sha256(base64.b64decode(d["b64_json"])).hexdigest() for d in made["data"]]
    created = await define(
        ab,
        "kites",
        {"id": "first", "request_key": key, "index": 0},
        {"id": "second", "request_key": key, "index": 1, "weight": 0},
    )
    assert [v["image"] for v in created["variants"]] == shas
    assert created["variants"][0]["control"] is True  # the first, when none is marked
    _, headers, _ = await ab.call("GET", "/ab/kites/bob")
    assert headers["Location"] == f"/images/{shas[0]}.png"  # weight 0 is never shown


async def test_a_blob_the_cache_lost_is_served_from_the_experiment_copy(settings, clock):
    blobs = MemoryBlobStore()
    gw = await start_ab(
        settings, clock, stores=build_stores(settings, blobs=ThreadedBlobStore(blobs))
    )
    try:
        a, b = await hero(gw)
        blobs.discard(a)
        blobs.discard(b)
        _, headers, data = await gw.call("GET", "/ab/hero/carol?inline=1")
        assert hashlib.sha256(data).hexdigest() in (a, b)
        _, headers, _ = await gw.call("GET", "/ab/hero/dave")
        status, _, data = await gw.call("GET", headers["Location"])
        assert status == 200 and headers["Location"].split("/")[-1].startswith(
            hashlib.sha256(data).hexdigest()
        )
    finally:
        await gw.close()


# -- admin ---------------------------------------------------------------------------------------


async def test_setup_ab_twice_changes_nothing(settings, clock):
    app = create_app(settings, providers={"placeholder": CountingProvider()}, clock=clock)
    setup_ab(app)
    store, routes = app[EXPERIMENTS], len(app.router.routes())
    setup_ab(app)  # e.g. create_app already did
    assert app[EXPERIMENTS] is store and len(app.router.routes()) == routes
    await app[STORES].aclose()


async def test_admin_routes_need_the_admin_key(ab):
    a, b = await two_images(ab)
    body = {"name": "x", "variants": [{"id": "A", "image": a}, {"id": "B", "image": b}]}
    for method, path, kw in (
        ("POST", "/admin/ab", {"json": body}),
        ("GET", "/admin/ab", {}),
        ("GET", "/admin/ab/x", {}),
        ("DELETE", "/admin/ab/x", {}),
    ):
        status, _, got = await ab.call(method, path, **kw)
        assert status == 401 and got["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("mutate", "param", "code"),
    [
        (lambda body, a, b: body.update(name="no spaces"), "name", "invalid_value"),
        (lambda body, a, b: body["variants"].pop(), "variants", "invalid_value"),
        (lambda body, a, b: body["variants"][1].update(id="A"), "variants", "invalid_value"),
        (
            lambda body, a, b: body["variants"][1].update(image="0" * 64),
            "variants[1].image",
            "image_not_found",
        ),
        (
            lambda body, a, b: body["variants"][0].update(image="xyz"),
            "variants[0].image",
            "invalid_value",
        ),
        (
            lambda body, a, b: body["variants"][0].update(weight=-1),
            "variants[0].weight",
            "invalid_value",
        ),
        (
            lambda body, a, b: [v.update(control=True) for v in body["variants"]],
            "variants",
            "invalid_value",
        ),
        (
            lambda body, a, b: [v.update(weight=0) for v in body["variants"]],
            "variants",
            "invalid_value",
        ),
        (
            lambda body, a, b: body["variants"][0].update(request_key="a" * 64),
            "variants[0].image",
            "invalid_value",
        ),
    ],
)
async def test_bad_definitions_are_400_with_the_field(ab, mutate, param, code):
    a, b = await two_images(ab)
    body = {"name": "bad", "variants": [{"id": "A", "image": a}, {"id": "B", "image": b}]}
    mutate(body, a, b)
    status, got = await ab.admin("POST", "/admin/ab", json=body)
    assert status == 400, got
    assert (got["error"]["param"], got["error"]["code"]) == (param, code)
    assert got["error"]["type"] == "invalid_request_error"


async def test_list_redefine_and_delete(ab):
    a, b = await hero(ab)
    status, got = await ab.admin(
        "POST",
        "/admin/ab",
        json={"name": "hero", "variants": [{"id": "A", "image": a}, {"id": "B", "image": b}]},
    )
    assert status == 409 and got["error"]["code"] == "experiment_exists"
    _, listed = await ab.admin("GET", "/admin/ab")
    assert [e["name"] for e in listed["data"]] == ["hero"]
    assert [v["label"] for v in listed["data"][0]["variants"]] == ["calm", "bold"]
    await ab.call("GET", "/ab/hero/erin")
    assert await ab.admin("DELETE", "/admin/ab/hero") == (200, {"name": "hero", "deleted": True})
    assert (await ab.admin("DELETE", "/admin/ab/hero"))[0] == 404
    assert (await ab.call("GET", "/ab/hero/erin"))[0] == 404
    await hero(ab)  # the name is free again, and starts from nothing
    _, fresh = await ab.admin("GET", "/admin/ab/hero")
    assert sum(s["impressions"] for s in fresh["stats"]) == 0
    assert await ab.app[EXPERIMENTS].image(a) is not None
