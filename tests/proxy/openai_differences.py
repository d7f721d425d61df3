"""Where the gateway's OpenAPI document and behaviour deliberately differ from OpenAI's
document (tests/data/openai-images.openapi.json). README.md, "Compatibility with OpenAI's
spec", explains each; tests/proxy/test_openapi.py and test_schemathesis.py hold the gateway
to exactly these, so a difference not listed here fails."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OPENAI_DOCUMENT = ROOT / "tests" / "data" / "openai-images.openapi.json"
OUR_DOCUMENT = ROOT / "proxy" / "openapi.json"

# Schema properties our document widens: schema name -> property names.
WIDENED_PROPERTIES: dict[str, set[str]] = {
    # The size of the image served: gpt-image-2 takes any WxH in multiples of 16, so an
    # answer's size is not always one of OpenAI's three (its own API answers the same).
    "ImagesResponse": {"size"},
    "ImageGenCompletedEvent": {"size"},
    "ImageEditCompletedEvent": {"size"},
}

# Operations whose 200 JSON answer may also be another schema: (our path, method) -> the
# schema added beside OpenAI's (as anyOf). A dry run (X-Imagegate-Dry-Run: 1, a header
# OpenAI's API does not take) is answered with a quote instead of images.
ALTERNATIVE_ANSWERS: dict[tuple[str, str], str] = {
    (path, "post"): "#/components/schemas/ImagegateQuote"
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations")
}

# Answers to requests that are valid by OpenAI's document, which OpenAI's API does not give:
# (status, error code) -> why.
DELIBERATE_ANSWERS: dict[tuple[int, str], str] = {
    (404, "model_not_found"): "a model the catalog does not have is 404, whatever OpenAI's "
    "schema allows: made-up names, OpenAI names the gateway does not serve "
    "(chatgpt-image-latest), and the text 'null' (multipart cannot send a null)",
    (400, "invalid_type"): "a multipart number field (n, partial_images...) holding the text "
    "'null': multipart cannot send a null, and 'null' is no number",
    (400, "unsupported_parameter"): "a JSON edit's `file_id` (the gateway has no Files API), "
    "and a parameter the model does not take (style on gpt-image), as OpenAI",
    (400, "invalid_image_url"): "a JSON edit's http(s) `image_url` whose host is not in "
    "[uploads] url_hosts (empty by default), or a URL that is neither data: nor http(s)",
}

# Answers OpenAI's API gives as well, to requests its document cannot rule out: per-model
# rules and file contents. (status, error code) -> the rule.
SHARED_ANSWERS: dict[tuple[int, str], str] = {
    (400, "invalid_value"): "a value the model does not take (quality=hd on gpt-image)",
    (400, "invalid_size"): "a size the model does not make (256x256 on gpt-image)",
    (400, "unknown_parameter"): "a parameter no model takes (the schemas allow any property)",
    (400, "missing_required_parameter"): "an empty prompt or no image (a required string "
    "may be empty in the schema)",
    (400, "invalid_image_format"): "a file part that is no PNG, JPEG or WebP image",
    (400, "invalid_image"): "an empty or unreadable image file",
    (400, "image_too_large"): "a data: URL larger than the body limit",
    (400, "invalid_multipart"): "a part name with a control character (the schemas allow "
    "any property name; RFC 9110 forbids control characters in a header field value)",
}

# Accepted where OpenAI's document says otherwise (no error to list; the tests check them):
# `response_format` works for every model (url answers for GPT image models too), the retired
# DALL-E names and gpt-image-1 are served by their successors instead of 404, and a request
# without `model` gets [defaults] model (gpt-image-1.5), not dall-e-2.
RETIRED_NAMES = ("dall-e-2", "dall-e-3", "gpt-image-1")


def openai_document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OPENAI_DOCUMENT.read_text(encoding="utf-8"))
    return data


def our_document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OUR_DOCUMENT.read_text(encoding="utf-8"))
    return data


def openai_document_with_widened_properties() -> dict[str, Any]:
    """OpenAI's document with WIDENED_PROPERTIES taken from ours, and nothing else changed."""
    theirs, ours = openai_document(), our_document()
    patched = copy.deepcopy(theirs)
    for name, properties in WIDENED_PROPERTIES.items():
        for prop in properties:
            patched["components"]["schemas"][name]["properties"][prop] = copy.deepcopy(
                ours["components"]["schemas"][name]["properties"][prop]
            )
    return patched
