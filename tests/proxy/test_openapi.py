"""GET /openapi.json: a valid OpenAPI 3.1 document of every route the gateway serves, whose
image routes are OpenAI's own (tests/data/openai-images.openapi.json, a copy of the shared
vendored document), with only the deliberate differences in openai_differences.py."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from proxy.routes.openapi import document
from tests.proxy.openai_differences import (
    ALTERNATIVE_ANSWERS,
    WIDENED_PROPERTIES,
    openai_document,
    our_document,
)

README = Path(__file__).resolve().parents[2] / "README.md"

# OpenAI's paths -> ours (the gateway serves them under /v1, OpenAI's server URL's path).
OPENAI_PATHS = {
    "/images/generations": "/v1/images/generations",
    "/images/edits": "/v1/images/edits",
    "/images/variations": "/v1/images/variations",
    "/models": "/v1/models",
}


def ours() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(document())
    return data


def test_the_document_is_valid_openapi():
    validate(ours())
    assert ours()["openapi"] == openai_document()["openapi"] == "3.1.0"
    assert ours() == our_document()  # what is served is the file in the package


async def test_the_document_is_served(gateway):
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.root}/openapi.json") as got:
        assert got.status == 200
        assert got.content_type == "application/json"
        assert await got.read() == document()


async def test_every_route_the_gateway_serves_is_documented_and_nothing_else(gateway):
    served = set()
    for route in gateway.app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside every GET
        path = route.resource.canonical if route.resource is not None else ""
        served.add((path, route.method.lower()))
    documented = {(path, m) for path, item in ours()["paths"].items() for m in item}
    assert served == documented


def test_openai_schemas_are_copied_with_their_names_and_only_the_listed_widenings():
    theirs = openai_document()["components"]["schemas"]
    mine = ours()["components"]["schemas"]
    for name, schema in theirs.items():
        widened = WIDENED_PROPERTIES.get(name, set())
        assert _without(mine[name], widened) == _without(schema, widened), name
        for prop in widened:  # a superset: OpenAI's own schema is one of its branches
            original = {k: v for k, v in schema["properties"][prop].items() if k != "description"}
            assert original in mine[name]["properties"][prop]["anyOf"], (name, prop)


def _without(schema: dict[str, Any], properties: set[str]) -> dict[str, Any]:
    kept = {k: v for k, v in schema.get("properties", {}).items() if k not in properties}
    return {**schema, "properties": kept} if "properties" in schema else schema


def test_image_operations_are_openais_with_only_the_listed_differences():
    theirs, mine = openai_document()["paths"], ours()["paths"]
    for openai_path, our_path in OPENAI_PATHS.items():
        for method, operation in theirs[openai_path].items():
            ours_op = mine[our_path][method]
            assert ours_op["operationId"] == operation["operationId"]
            assert ours_op["x-openai-path"] == openai_path
            expected = copy.deepcopy(operation["responses"]["200"]["content"])
            if (our_path, method) in ALTERNATIVE_ANSWERS:
                answer = expected["application/json"]
                alternative = {"$ref": ALTERNATIVE_ANSWERS[our_path, method]}
                answer["schema"] = {"anyOf": [answer["schema"], alternative]}
            assert ours_op["responses"]["200"]["content"] == expected, our_path
            if "requestBody" in operation:  # every body OpenAI takes, JSON edits included
                assert ours_op["requestBody"] == operation["requestBody"], our_path


async def test_the_widened_size_is_needed(gateway):
    """gpt-image-2 at 1792x1024 answers a size OpenAI's ImagesResponse does not allow."""
    body = {"prompt": "a lighthouse", "model": "gpt-image-2", "size": "1792x1024"}
    async with aiohttp.ClientSession() as http:
        url = f"{gateway.base_url}/images/generations"
        async with http.post(url, json=body) as answer:
            assert answer.status == 200
            served = await answer.json()
    assert served["size"] == "1792x1024"
    for spec, valid in ((openai_document(), False), (ours(), True)):
        schema = {"$ref": "#/components/schemas/ImagesResponse", **spec}
        assert Draft202012Validator(schema).is_valid(served) is valid


def test_image_operations_document_the_gateway_headers_and_error_envelope():
    mine = ours()
    headers = set(mine["components"]["headers"])
    assert {
        "X-Cache",
        "X-Cache-Key",
        "X-Imagegate-Model",
        "X-Imagegate-Provider",
        "X-Imagegate-Cost-USD",
        "X-Request-Id",
        "X-Imagegate-Dry-Run",
        "X-Imagegate-Quote-USD",
    } <= headers
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations"):
        operation = mine["paths"][path]["post"]
        answer_headers = headers - {"Retry-After", "retry-after-ms", "x-should-retry"}
        assert set(operation["responses"]["200"]["headers"]) == answer_headers, path
        assert {"400", "401", "404", "408", "413", "429", "500", "502", "503", "504"} <= set(
            operation["responses"]
        )
        names = {p["$ref"].rsplit("/", 1)[1] for p in operation["parameters"]}
        assert names == {"CacheControl", "RequestId", "DryRun"}
    for name, response in mine["components"]["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, name


def test_waits_are_documented_with_retry_after():
    """429 and 503 (provider_waiting, circuit_open) say when to try again, as the SDKs read it."""
    responses = ours()["components"]["responses"]
    for name in ("TooManyRequests", "Unavailable"):
        assert {"Retry-After", "retry-after-ms", "x-should-retry"} <= set(
            responses[name]["headers"]
        ), name


def test_metrics_and_models_document_their_keys():
    paths, schemes = ours()["paths"], ours()["components"]["securitySchemes"]
    assert {"metricsKey": []} in paths["/metrics"]["get"]["security"]
    assert schemes["metricsKey"]["scheme"] == "bearer"
    assert {"apiKey": []} in paths["/v1/models"]["get"]["security"]
    for path in ("/metrics", "/v1/models"):
        assert "401" in paths[path]["get"]["responses"], path


async def test_a_dry_run_is_answered_by_the_documented_quote(gateway):
    body = {"prompt": "a lighthouse", "model": "gpt-image-1.5", "size": "1024x1024"}
    async with aiohttp.ClientSession() as http:
        url = f"{gateway.base_url}/images/generations"
        async with http.post(url, json=body, headers={"X-Imagegate-Dry-Run": "1"}) as answer:
            assert answer.status == 200
            quote = await answer.json()
            sent = set(answer.headers)
    assert quote["object"] == "imagegate.quote"
    mine = ours()
    operation = mine["paths"]["/v1/images/generations"]["post"]
    schema = {**operation["responses"]["200"]["content"]["application/json"]["schema"], **mine}
    assert Draft202012Validator(schema).is_valid(quote)
    quote_only = {"$ref": "#/components/schemas/ImagegateQuote", **mine}
    assert Draft202012Validator(quote_only).is_valid(quote)
    assert {"X-Imagegate-Dry-Run", "X-Imagegate-Quote-USD"} <= sent


def test_admin_operations_need_the_admin_key():
    for path, item in ours()["paths"].items():
        if path.startswith(("/admin/", "/dashboard")):
            for method, operation in item.items():
                assert {"adminKey": []} in operation["security"], (path, method)
                assert "401" in operation["responses"], (path, method)


def test_the_readme_explains_the_deliberate_differences():
    text = README.read_text(encoding="utf-8")
    section = re.search(r"### Compatibility with OpenAI's spec\n(.*?)\n## ", text, re.S)
    assert section is not None, "README.md has no 'Compatibility with OpenAI's spec' section"
    assert "/openapi.json" in section[1]
    assert "X-Imagegate-Dry-Run" in section[1]  # ALTERNATIVE_ANSWERS
    assert "invalid_content_type" not in section[1]  # JSON edits are taken
