"""The body of `POST /admin/ab`, checked field by field, and its images found in the cache."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from policies.abtest import Variant
from policies.errors import InvalidRequest
from proxy.imaging import sniff
from proxy.ports import BlobStore, EntryStore
from proxy.stores.experiments import ImageVariant

__all__ = ["VariantInput", "parse_alpha", "parse_definition", "resolve_images"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA: Final = re.compile(r"[0-9a-f]{64}")
_VARIANTS_MAX: Final = 26
_WEIGHT_MAX: Final = 1_000_000
_LABEL_MAX: Final = 200
_FORMATS: Final = frozenset({"png", "jpeg", "webp", "gif", "svg"})


@dataclass(frozen=True, slots=True)
class VariantInput:
    variant: Variant
    image: str | None
    request_key: str | None
    index: int | None
    param: str  # where it sits in the body, for errors: "variants[2]"


def parse_definition(body: Mapping[str, object]) -> tuple[str, tuple[VariantInput, ...]]:
    """The experiment's name and variants; the first variant is the control unless one is
    marked. Raises `InvalidRequest` naming the field."""
    name = body.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidRequest(
            "'name' is required: 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit.",
            param="name",
        )
    raw = body.get("variants")
    if not isinstance(raw, list) or not 2 <= len(raw) <= _VARIANTS_MAX:
        raise InvalidRequest(
            f"'variants' must be a list of 2-{_VARIANTS_MAX} variants.", param="variants"
        )
    inputs = [_variant(item, f"variants[{i}]") for i, item in enumerate(raw)]
    _check_set(inputs)
    if not any(v.variant.control for v in inputs):
        inputs[0] = replace(inputs[0], variant=replace(inputs[0].variant, control=True))
    return name, tuple(inputs)


def _variant(item: object, param: str) -> VariantInput:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    vid = item.get("id")
    if not isinstance(vid, str) or _NAME.fullmatch(vid) is None:
        raise InvalidRequest(
            f"'{param}.id' is required: 1-64 letters, digits, '.', '_' or '-'.",
            param=f"{param}.id",
        )
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= _WEIGHT_MAX:
        raise InvalidRequest(
            f"'{param}.weight' must be a whole number from 0 to {_WEIGHT_MAX}.",
            param=f"{param}.weight",
        )
    label = item.get("label", "")
    if not isinstance(label, str) or len(label) > _LABEL_MAX:
        raise InvalidRequest(
            f"'{param}.label' must be text of at most {_LABEL_MAX} characters.",
            param=f"{param}.label",
        )
    control = item.get("control", False)
    if not isinstance(control, bool):
        raise InvalidRequest(f"'{param}.control' must be true or false.", param=f"{param}.control")
    image, key, index = _source(item, param)
    return VariantInput(Variant(vid, weight, control, label), image, key, index, param)


def _source(item: Mapping[str, Any], param: str) -> tuple[str | None, str | None, int | None]:
    image, key, index = item.get("image"), item.get("request_key"), item.get("index", 0)
    if (image is None) == (key is None):
        raise InvalidRequest(
            f"'{param}' needs either 'image' (the sha256 of a cached image) or "
            "'request_key' (an X-Cache-Key) with an optional 'index'.",
            param=f"{param}.image",
        )
    for field, value in (("image", image), ("request_key", key)):
        if value is not None and (not isinstance(value, str) or _SHA.fullmatch(value) is None):
            raise InvalidRequest(
                f"'{param}.{field}' must be 64 lowercase hex digits (a sha256).",
                param=f"{param}.{field}",
            )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 100:
        raise InvalidRequest(f"'{param}.index' must be 0-99.", param=f"{param}.index")
    if key is None:
        return image, None, None
    return None, key, index


def _check_set(inputs: list[VariantInput]) -> None:
    ids = [v.variant.id for v in inputs]
    if len(set(ids)) != len(ids):
        raise InvalidRequest("Variant ids must be unique.", param="variants")
    if sum(v.variant.control for v in inputs) > 1:
        raise InvalidRequest("At most one variant can be the control.", param="variants")
    if sum(v.variant.weight for v in inputs) == 0:
        raise InvalidRequest("At least one variant needs a weight above 0.", param="variants")


async def resolve_images(
    inputs: tuple[VariantInput, ...], blobs: BlobStore, entries: EntryStore
) -> tuple[tuple[ImageVariant, ...], dict[str, bytes]]:
    """Each variant with its image's sha256 and format, and the image bytes by sha256.
    Read through the ports (the disk store reads inline)."""
    variants: list[ImageVariant] = []
    data: dict[str, bytes] = {}
    for item in inputs:
        sha = item.image or await _entry_blob(item, entries)
        found = data.get(sha) or await blobs.get(sha)
        if found is None:
            raise InvalidRequest(
                f"'{item.param}': no image with sha256 {sha[:16]}… is in the cache.",
                param=f"{item.param}.image",
                code="image_not_found",
            )
        fmt = sniff(found[:4096])
        if fmt not in _FORMATS:
            raise InvalidRequest(
                f"'{item.param}': the cached bytes are not an image.", param=f"{item.param}.image"
            )
        data[sha] = found
        variants.append(ImageVariant(item.variant, sha, fmt, item.request_key, item.index))
    return tuple(variants), data


async def _entry_blob(item: VariantInput, entries: EntryStore) -> str:
    assert item.request_key is not None
    assert item.index is not None
    entry = await entries.get(item.request_key, item.index)
    if entry is None:
        raise InvalidRequest(
            f"'{item.param}': no cached image for request key {item.request_key[:16]}… "
            f"at index {item.index}.",
            param=f"{item.param}.request_key",
            code="image_not_found",
        )
    return entry.blob


def parse_alpha(text: str | None) -> float:
    if text is None or text == "":
        return 0.05
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0 < alpha <= 0.5:
        raise InvalidRequest("'alpha' must be a number above 0 and at most 0.5.", param="alpha")
    return alpha
