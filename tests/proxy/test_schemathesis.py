"""Schemathesis against a real gateway process: our own document (GET /openapi.json) and
OpenAI's (tests/data/openai-images.openapi.json), bounded and deterministic.

The h11 rule: whatever a client sends, the answer is a response (ours, documented), never a
500 and never a hang. The gateway serves offline (the placeholder provider), so every miss is
free and local; the admin key is set, so the admin routes are fuzzed both with and without it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.proxy.openai_differences import (
    DELIBERATE_ANSWERS,
    OUR_DOCUMENT,
    RETIRED_NAMES,
    SHARED_ANSWERS,
    openai_document,
    openai_document_with_widened_properties,
)

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "schemathesis-admin-key-0123456789abcdef"
EXAMPLES = 25  # per operation and generation mode
TIMEOUT = 30  # seconds per request: a hang fails the case instead of the suite
CONFIG = """
[providers.placeholder]
enabled = true
[auth]
admin_key = "${IMAGEGATE_ADMIN_KEY}"
[logging]
level = "error"
"""


@contextmanager
def running_gateway(home: Path) -> Iterator[str]:
    """`imagegate serve` as a process on a free loopback port: its root URL."""
    (home / "config.toml").write_text(CONFIG)
    prefixes = ("IMAGEGATE_", "OPENAI_", "REPLICATE_", "FAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env |= {"PYTHONPATH": str(ROOT), "IMAGEGATE_ADMIN_KEY": ADMIN_KEY}
    env["IMAGEGATE_DATA_DIR"] = str(home / "data")
    command = [sys.executable, "-m", "proxy", "serve", "--config", str(home / "config.toml")]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=home,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline())
        assert match is not None, "the gateway printed no base URL"
        yield match[1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def gateway_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway without API keys, for the image, public and operations routes."""
    with running_gateway(tmp_path_factory.mktemp("public")) as root:
        yield root


@pytest.fixture(scope="module")
def admin_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Another one for the admin routes: the keys they issue would close the image routes."""
    with running_gateway(tmp_path_factory.mktemp("admin")) as root:
        yield root


def bounded(schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    schema.config.generation.update(max_examples=EXAMPLES, deterministic=True)
    schema.config.phases.update(phases=["examples", "coverage", "fuzzing"])
    return schema


FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _stream_event_schema(case) -> dict:
    """The schema OpenAI's document gives an image stream's events (ImageGenStreamEvent or
    ImageEditStreamEvent), with the document's components for its references."""
    document = case.operation.schema.raw_schema
    operation = document["paths"][case.operation.path][case.method.lower()]
    event = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    return {**event, "components": document["components"]}


def schema_conformance(ctx, response, case):
    """Schemathesis' response_schema_conformance, except for server-sent events.

    OpenAI's document puts the schema of an event's `data` JSON under text/event-stream
    (ImageGenStreamEvent), while schemathesis reads a schema there as the schema of the SSE
    frame ({"event", "data", ...}), which no event of OpenAI's own API would pass. So streams
    are checked here: every frame's `data` must be JSON valid against the documented schema."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return response_schema_conformance(ctx, response, case)
    validator = Draft202012Validator(_stream_event_schema(case))
    frames = [f for f in response.content.decode().split("\n\n") if f.strip()]
    assert frames, "an empty event stream"
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        payload = json.loads(fields["data"])
        assert fields["event"] == payload["type"]
        errors = [e.message for e in validator.iter_errors(payload)]
        assert not errors, f"stream event {payload['type']} violates the schema: {errors}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    schema_conformance,
]

ours = bounded(schemathesis.openapi.from_path(OUR_DOCUMENT))


ADMIN = r"^/(admin|dashboard)"
UPLOADS = r"^/v1/images/(edits|variations)$"


@ours.exclude(path_regex=UPLOADS).exclude(path_regex=ADMIN).parametrize()
@FUZZ
def test_gateway_keeps_its_own_document(case, gateway_root):
    case.call_and_validate(base_url=gateway_root, checks=CHECKS, timeout=TIMEOUT)


@ours.include(path_regex=ADMIN).parametrize()
@FUZZ
def test_gateway_keeps_its_own_document_for_admin_routes(case, admin_root):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    case.call_and_validate(base_url=admin_root, headers=admin, checks=CHECKS, timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/variations"])
def test_gateway_keeps_its_own_document_for_uploads(gateway_root, path):
    """Hypothesis over schemathesis' strategy for the operation: every body it documents
    (multipart, and JSON for edits)."""

    @FUZZ
    @given(case=ours[path]["POST"].as_strategy())
    def fuzz(case):
        case.call_and_validate(base_url=gateway_root, checks=CHECKS, timeout=TIMEOUT)

    fuzz()


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/variations"])
def test_a_control_character_in_a_part_header_is_a_400(gateway_root, path):
    """The smallest request schemathesis found that answers 500 (reduced by hand)."""
    body = b'--B\r\nContent-Disposition: form-data; name="a\x14b"\r\n\r\nx\r\n--B--\r\n'
    status, error = raw_post(gateway_root, path, "multipart/form-data; boundary=B", body)
    assert status == 400 and error["error"]["code"] == "invalid_multipart"


def raw_post(root: str, path: str, content_type: str, body: bytes) -> tuple[int, dict]:
    """POST bytes as they are (an HTTP client would refuse to send some of them)."""
    host, port = root.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    header, _, payload = answer.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload)


# ---- OpenAI's own document -----------------------------------------------------------------
# Positive cases only (valid by OpenAI's document): each must be answered 200 or with an
# answer openai_differences.py lists. The document is OpenAI's with the listed widenings.

theirs = bounded(schemathesis.openapi.from_dict(openai_document_with_widened_properties()))
theirs.config.generation.update(modes=["positive"])
OPENAI_UPLOADS = r"^/images/(edits|variations)$"


def listed_answer(ctx, response, case):
    """An answer to a request OpenAI's document allows is 200 or a listed difference."""
    status = response.status_code
    if status == 200:
        return _check_served(response, case)
    error = response.json()["error"]
    known = DELIBERATE_ANSWERS.keys() | SHARED_ANSWERS.keys()
    assert (status, error["code"]) in known, (
        f"an undocumented difference from OpenAI's document: {status} {error}"
    )
    body = case.body if isinstance(case.body, dict) else {}
    if error["code"] == "model_not_found":
        assert body.get("model") not in RETIRED_NAMES  # retired names are served, not 404
    return None


def _check_served(response, case):
    """`response_format` is honoured for every model (OpenAI: DALL-E only)."""
    body = case.body if isinstance(case.body, dict) else {}
    if "json" not in response.headers.get("content-type", [""])[0]:
        return None  # a stream: schema_conformance checked its events
    served = response.json()
    if body.get("response_format") in ("url", "b64_json") and "data" in served:
        assert all(body["response_format"] in image for image in served["data"])
    return None


OPENAI_CHECKS = [not_a_server_error, content_type_conformance, schema_conformance, listed_answer]


@theirs.exclude(path_regex=OPENAI_UPLOADS).parametrize()
@FUZZ
def test_gateway_keeps_openais_document(case, gateway_root):
    case.call_and_validate(base_url=gateway_root + "/v1", checks=OPENAI_CHECKS, timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/images/edits", "/images/variations"])
def test_gateway_keeps_openais_document_for_uploads(gateway_root, path):
    @FUZZ
    @given(case=theirs[path]["POST"].as_strategy())
    def fuzz(case):
        case.call_and_validate(base_url=gateway_root + "/v1", checks=OPENAI_CHECKS, timeout=TIMEOUT)

    fuzz()


def test_a_json_edit_is_served_as_openais_document_says(gateway_root):
    """OpenAI's JSON edit body (EditImageBodyJsonParam) with a data: URL: 200, an
    ImagesResponse by OpenAI's schema."""
    png = base64.b64encode(_png()).decode()
    body = {
        "prompt": "add a hat",
        "model": "gpt-image-1.5",
        "images": [{"image_url": f"data:image/png;base64,{png}"}],
    }
    status, served = raw_post(
        gateway_root, "/v1/images/edits", "application/json", json.dumps(body).encode()
    )
    assert status == 200, served
    schema = {"$ref": "#/components/schemas/ImagesResponse", **openai_document()}
    assert not [e.message for e in Draft202012Validator(schema).iter_errors(served)]
    assert served["data"] and "b64_json" in served["data"][0]


@pytest.mark.parametrize(
    ("image", "code"),
    [
        ({"image_url": "https://example.com/a.png"}, "invalid_image_url"),
        ({"file_id": "file-abc123"}, "unsupported_parameter"),
    ],
)
def test_a_json_edit_the_gateway_cannot_fetch_is_a_listed_400(gateway_root, image, code):
    """No [uploads] url_hosts: an http(s) URL is not fetched; no Files API: no file_id."""
    body = json.dumps({"prompt": "add a hat", "images": [image]}).encode()
    status, error = raw_post(gateway_root, "/v1/images/edits", "application/json", body)
    assert (status, error["error"]["code"]) == (400, code)
    assert (status, code) in DELIBERATE_ANSWERS


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 40)).save(out, format="PNG")
    return out.getvalue()
