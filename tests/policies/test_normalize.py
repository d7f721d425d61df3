"""Normalization and the request key: the rules in the README, pinned by properties."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.errors import InvalidRequest, ModelNotFound
from policies.models import ImageRequest, UploadInfo
from policies.normalize import (
    canonical_json,
    normalize_prompt,
    parse_edit,
    parse_generation,
    parse_variation,
    request_key,
)
from proxy.catalog_loader import load_catalog

CATALOG = load_catalog()


def key_of(body: dict[str, object]) -> str:
    return request_key(parse_generation(body, CATALOG, default_model="gpt-image-1.5").request)


BASE = {"model": "gpt-image-1.5", "prompt": "A red fox in snow"}
GPT_DEFAULTS = {
    "size": "auto",
    "quality": "auto",
    "background": "auto",
    "output_format": "png",
    "moderation": "auto",
    "n": 1,
}
IGNORED = {
    "user": "u-123",
    "safety_identifier": "s-9",
    "response_format": "url",
    "stream": False,
    "partial_images": 2,
    "n": 3,
}

prompts = st.text(min_size=1, max_size=200).filter(lambda s: s.strip())


@given(st.permutations(list({**BASE, **GPT_DEFAULTS}.items())))
def test_key_ignores_field_order(items):
    assert key_of(dict(items)) == key_of(BASE)


@given(st.sets(st.sampled_from(sorted(GPT_DEFAULTS))))
def test_key_ignores_explicit_defaults_and_nulls(names):
    explicit = {**BASE, **{n: GPT_DEFAULTS[n] for n in names}}
    nulls = {**BASE, **dict.fromkeys(names)}
    assert key_of(explicit) == key_of(BASE) == key_of(nulls)


@given(st.sets(st.sampled_from(sorted(IGNORED))))
def test_key_ignores_fields_that_do_not_change_pixels(names):
    assert key_of({**BASE, **{n: IGNORED[n] for n in names}}) == key_of(BASE)


@given(prompts, st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\u3000"]), min_size=1))
def test_key_ignores_whitespace_runs(prompt, spaces):
    words = prompt.split()
    if not words:
        return
    spaced = "".join(w + spaces[i % len(spaces)] for i, w in enumerate(words))
    assert key_of({**BASE, "prompt": spaced}) == key_of({**BASE, "prompt": " ".join(words)})


@given(prompts)
def test_key_ignores_unicode_normal_form(prompt):
    nfd = unicodedata.normalize("NFD", prompt)
    nfc = unicodedata.normalize("NFC", prompt)
    assert key_of({**BASE, "prompt": nfd}) == key_of({**BASE, "prompt": nfc})


@given(prompts)
def test_key_keeps_case(prompt):
    if prompt.upper() == prompt.lower() or normalize_prompt(prompt.upper()) == normalize_prompt(
        prompt.lower()
    ):
        return
    assert key_of({**BASE, "prompt": prompt.upper()}) != key_of({**BASE, "prompt": prompt.lower()})


PIXEL_CHANGES = [
    {"size": "1536x1024"},
    {"quality": "high"},
    {"background": "transparent"},
    {"output_format": "webp"},
    {"moderation": "low"},
    {"model": "gpt-image-1-mini"},
    {"prompt": "A red fox in rain"},
    {"seed": 7},
]


@pytest.mark.parametrize("change", PIXEL_CHANGES)
def test_key_changes_with_anything_that_changes_pixels(change):
    assert key_of({**BASE, **change}) != key_of(BASE)


def test_compression_counts_only_where_the_format_uses_it():
    assert key_of({**BASE, "output_compression": 50}) == key_of(BASE)  # png ignores it
    jpeg = {**BASE, "output_format": "jpeg"}
    assert key_of({**jpeg, "output_compression": 50}) != key_of(jpeg)
    assert key_of({**jpeg, "output_compression": 100}) == key_of(jpeg)


def test_alias_resolves_to_its_model():
    a = key_of({"model": "gpt-image-2-2026-04-21", "prompt": "x"})
    assert a == key_of({"model": "gpt-image-2", "prompt": "x"})


def test_scope_separates_keys():
    request = parse_generation(BASE, CATALOG, default_model="gpt-image-1.5").request
    assert request_key(request, "team-a") != request_key(request, "team-b") != request_key(request)


def test_the_key_is_the_documented_hash_and_stays_stable():
    """key = sha256("imagegate/v1\\n" + canonical JSON): the format is part of the on-disk cache
    (a change orphans every stored entry), so it is pinned here."""
    request = parse_generation(BASE, CATALOG, default_model="gpt-image-1.5").request
    text = "imagegate/v1\n" + canonical_json(request, "team-a")
    assert request_key(request, "team-a") == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_delivery_fields_are_parsed():
    parsed = parse_generation(
        {**BASE, "n": 3, "stream": True, "partial_images": 2},
        CATALOG,
        default_model="gpt-image-1.5",
    )
    assert (parsed.delivery.n, parsed.delivery.stream, parsed.delivery.partial_images) == (
        3,
        True,
        2,
    )
    assert parsed.delivery.response_format == "b64_json"
    dalle = parse_generation({"model": "dall-e-2", "prompt": "x"}, CATALOG, default_model="x")
    assert dalle.delivery.response_format == "url"


BAD_GENERATIONS = [
    ({"model": "gpt-image-1.5"}, "prompt", "missing_required_parameter"),
    ({**BASE, "prompt": "   "}, "prompt", "missing_required_parameter"),
    ({**BASE, "prompt": 5}, "prompt", "invalid_type"),
    ({**BASE, "n": 0}, "n", "invalid_value"),
    ({**BASE, "n": 11}, "n", "invalid_value"),
    ({**BASE, "n": "2"}, "n", "invalid_type"),
    ({**BASE, "n": True}, "n", "invalid_type"),
    ({**BASE, "n": 1.5}, "n", "invalid_type"),
    ({**BASE, "size": "512x512"}, "size", "invalid_size"),
    ({**BASE, "quality": "hd"}, "quality", "invalid_value"),
    ({**BASE, "style": "vivid"}, "style", "unsupported_parameter"),
    ({**BASE, "output_format": "jpg"}, "output_format", "invalid_value"),
    ({**BASE, "output_format": "jpeg", "background": "transparent"}, "background", "invalid_value"),
    ({**BASE, "output_compression": 101}, "output_compression", "invalid_value"),
    ({**BASE, "bogus": 1}, "bogus", "unknown_parameter"),
    ({**BASE, "frame_count": 4}, "frame_count", "unsupported_parameter"),
    ({"model": "dall-e-3", "prompt": "x", "n": 2}, "n", "invalid_value"),
    ({"model": "dall-e-3", "prompt": "x", "size": "1536x1024"}, "size", "invalid_size"),
    ({"model": "dall-e-3", "prompt": "x" * 4001}, "prompt", "string_above_max_length"),
    ({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", "string_above_max_length"),
    (
        {"model": "dall-e-2", "prompt": "x", "background": "opaque"},
        "background",
        "unsupported_parameter",
    ),
    ({"model": "dall-e-2", "prompt": "x", "stream": True}, "stream", "unsupported_parameter"),
    ({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, "size", "invalid_size"),
    ({"model": "gpt-image-2", "prompt": "x", "size": "3840x1024"}, "size", "invalid_size"),
    ({"model": "gpt-image-2", "prompt": "x", "size": "4096x2048"}, "size", "invalid_size"),
    ({"model": "gpt-image-2", "prompt": "x", "frame_count": 3}, "frame_count", "invalid_value"),
    ({**BASE, "prompt": "x" * 32001}, "prompt", "string_above_max_length"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_GENERATIONS)
def test_bad_generations_say_what_to_fix(body, param, code):
    with pytest.raises(InvalidRequest) as info:
        parse_generation(body, CATALOG, default_model="gpt-image-1.5")
    assert (info.value.param, info.value.code) == (param, code)
    assert info.value.status_hint == 400


def test_unknown_model_is_404_model_not_found():
    with pytest.raises(ModelNotFound) as info:
        parse_generation({"model": "nope", "prompt": "x"}, CATALOG, default_model="x")
    assert (info.value.status_hint, info.value.code, info.value.param) == (
        404,
        "model_not_found",
        "model",
    )


def test_flexible_sizes_accept_valid_shapes():
    for size in ("2048x1024", "3840x2160", "1024x3072", "auto"):
        parse_generation(
            {"model": "gpt-image-2", "prompt": "x", "size": size}, CATALOG, default_model="x"
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "model",
                "prompt",
                "n",
                "size",
                "quality",
                "style",
                "background",
                "output_format",
                "output_compression",
                "moderation",
                "stream",
                "partial_images",
                "user",
                "response_format",
                "seed",
                "svg",
                "complexity",
                "frame_count",
                "x",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_any_body_parses_or_gives_a_gateway_4xx(body):
    """The h11 fuzz rule: either a request, or an InvalidRequest/ModelNotFound, nothing else."""
    try:
        parse_generation(body, CATALOG, default_model="gpt-image-1.5")
    except (InvalidRequest, ModelNotFound) as exc:
        assert 400 <= exc.status_hint < 500


def png(sha: str, w: int = 64, h: int = 64, *, alpha: bool = False, fmt: str = "png") -> UploadInfo:
    return UploadInfo(sha256=sha * 64, format=fmt, width=w, height=h, nbytes=1000, has_alpha=alpha)


def test_edit_key_follows_image_content():
    form = {"prompt": "add a hat", "model": "gpt-image-1.5"}
    a = parse_edit(form, [png("a")], None, CATALOG, default_model="x").request
    b = parse_edit(form, [png("b")], None, CATALOG, default_model="x").request
    a2 = parse_edit(form, [png("a")], None, CATALOG, default_model="x").request
    assert request_key(a) == request_key(a2) != request_key(b)
    masked = parse_edit(form, [png("a")], png("c", alpha=True), CATALOG, default_model="x").request
    assert request_key(masked) != request_key(a)


def test_edit_form_strings_are_coerced():
    form = {"prompt": "x", "model": "gpt-image-1.5", "n": "2", "stream": "false"}
    parsed = parse_edit(form, [png("a")], None, CATALOG, default_model="x")
    assert parsed.delivery.n == 2 and parsed.delivery.stream is False


BAD_EDITS = [
    ({"prompt": "x"}, [], None, "image"),
    ({"prompt": "x"}, [png("a")], png("m", 32, 32, alpha=True), "mask"),
    ({"prompt": "x"}, [png("a")], png("m"), "mask"),
    ({"prompt": "x", "model": "dall-e-2"}, [png("a", 64, 32)], None, "image"),
    ({"prompt": "x", "model": "dall-e-2"}, [png("a"), png("b")], None, "image"),
    ({"prompt": "x", "model": "dall-e-2"}, [png("a", fmt="jpeg")], None, "image"),
    ({"prompt": "x", "model": "dall-e-3"}, [png("a")], None, "model"),
    (
        {"prompt": "x", "model": "gpt-image-1-mini", "input_fidelity": "high"},
        [png("a")],
        None,
        "input_fidelity",
    ),
    (
        {"prompt": "x", "model": "gpt-image-2", "input_fidelity": "low"},
        [png("a")],
        None,
        "input_fidelity",
    ),
    ({"prompt": "x", "style": "vivid"}, [png("a")], None, "style"),
    ({"prompt": "x", "n": "two"}, [png("a")], None, "n"),
]


@pytest.mark.parametrize(("form", "images", "mask", "param"), BAD_EDITS)
def test_bad_edits(form, images, mask, param):
    with pytest.raises(InvalidRequest) as info:
        parse_edit(form, images, mask, CATALOG, default_model="gpt-image-1.5")
    assert info.value.param == param


def test_variations_are_dalle2_only():
    parsed = parse_variation({"n": "2", "size": "512x512"}, png("a"), CATALOG)
    assert parsed.request.model == "dall-e-2" and parsed.delivery.n == 2
    with pytest.raises(InvalidRequest):
        parse_variation({"model": "gpt-image-1.5"}, png("a"), CATALOG)
    with pytest.raises(InvalidRequest):
        parse_variation({"prompt": "x"}, png("a"), CATALOG)
    with pytest.raises(InvalidRequest):
        parse_variation({}, None, CATALOG)


# Every string field a route reads: an empty string is a 400 naming it, never a default.
GENERATION_STRINGS = {
    "gpt-image-1.5": ["model", "size", "quality", "background", "output_format", "moderation"],
    "dall-e-3": ["size", "quality", "style", "response_format"],
    "dall-e-2": ["size", "quality", "response_format"],
    "gpt-image-2": ["complexity"],
}


@pytest.mark.parametrize(
    ("model", "name"),
    [(model, name) for model, names in GENERATION_STRINGS.items() for name in names],
)
def test_an_empty_string_is_not_a_default_on_generations(model, name):
    with pytest.raises(InvalidRequest) as caught:
        parse_generation(
            {"prompt": "x", "model": model, name: ""}, CATALOG, default_model="gpt-image-1.5"
        )
    assert (caught.value.param, caught.value.code) == (name, "invalid_value")


@pytest.mark.parametrize(
    "name", ["model", "size", "quality", "output_format", "background", "input_fidelity"]
)
def test_an_empty_string_is_not_a_default_on_edits(name):
    form = {"prompt": "x", "model": "gpt-image-1.5", name: ""}
    with pytest.raises(InvalidRequest) as caught:
        parse_edit(form, [png("a")], None, CATALOG, default_model="gpt-image-1.5")
    assert (caught.value.param, caught.value.code) == (name, "invalid_value")


@pytest.mark.parametrize("name", ["model", "size", "response_format"])
def test_an_empty_string_is_not_a_default_on_variations(name):
    with pytest.raises(InvalidRequest) as caught:
        parse_variation({name: ""}, png("a"), CATALOG)
    assert (caught.value.param, caught.value.code) == (name, "invalid_value")


def test_an_empty_user_is_still_accepted():
    body = {"prompt": "x", "user": "", "safety_identifier": ""}
    assert parse_generation(body, CATALOG, default_model="gpt-image-1.5").request.prompt == "x"


_TEXT = st.text(max_size=12)
_MAYBE = st.none() | _TEXT


@given(
    st.builds(
        ImageRequest,
        operation=st.sampled_from(["generate", "edit", "variation"]),
        model=_TEXT,
        prompt=_MAYBE,
        size=_TEXT,
        quality=_TEXT,
        output_format=st.sampled_from(["png", "jpeg", "webp"]),
        style=_MAYBE,
        background=_MAYBE,
        output_compression=st.none() | st.integers(0, 100),
        moderation=_MAYBE,
        input_fidelity=_MAYBE,
        images=st.lists(_TEXT, max_size=3).map(tuple),
        mask=_MAYBE,
        seed=st.none() | st.integers(-(2**63), 2**63),
        extras=st.lists(st.tuples(_TEXT, _TEXT), max_size=3).map(tuple),
    ),
    st.sampled_from(["", "team-a", "\u00e9quipe"]),
)
def test_canonical_json_is_the_json_of_every_field_as_asdict_gives_it(
    request: ImageRequest, scope: str
) -> None:
    """The key's bytes are a contract (cached entries are found by them): the fast path must
    give exactly what `json.dumps(asdict(request))` gives."""
    body = asdict(request) | ({"scope": scope} if scope else {})
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(request, scope) == expected
