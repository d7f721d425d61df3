"""Uploads, per model family (what OpenAI accepts): the images and masks themselves, the
parts a multipart form may carry (admitted one by one as they arrive), and the image
references of a JSON edit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from policies.catalog import Catalog, Family
from policies.errors import InvalidRequest
from policies.fields import EDIT_FIELDS, VARIATION_FIELDS
from policies.models import UploadInfo

__all__ = [
    "IMAGE_URL_MAX",
    "FormRules",
    "FormTally",
    "ImageRef",
    "admit_part",
    "check_edit_images",
    "check_mask",
    "form_rules",
    "image_refs",
]


def check_edit_images(images: Sequence[UploadInfo], family: Family) -> None:
    param = "image"
    if not images:
        raise InvalidRequest(
            "Missing required parameter: 'image'.", param=param, code="missing_required_parameter"
        )
    if len(images) > family.edit_images_max:
        raise InvalidRequest(
            f"Too many images: {family.name} takes at most {family.edit_images_max}.", param=param
        )
    for info in images:
        if info.format not in family.edit_formats:
            kinds = ", ".join(f"'image/{f}'" for f in family.edit_formats)
            raise InvalidRequest(
                f"Invalid file 'image': unsupported format '{info.format}'. "
                f"Supported file formats for {family.name} are {kinds}.",
                param=param,
                code="invalid_image_format",
            )
        if info.nbytes > family.edit_image_max_bytes:
            limit = family.edit_image_max_bytes // (1024 * 1024)
            raise InvalidRequest(
                f"Invalid file 'image': larger than {limit} MB.",
                param=param,
                code="image_too_large",
            )
        if family.edit_square_only and info.width != info.height:
            raise InvalidRequest(
                f"Invalid file 'image': {family.name} needs a square image, got "
                f"{info.width}x{info.height}.",
                param=param,
                code="invalid_image_shape",
            )


def check_mask(mask: UploadInfo, image: UploadInfo) -> None:
    if mask.format != "png" or not mask.has_alpha:
        raise InvalidRequest(
            "Invalid file 'mask': it must be a PNG with an alpha channel; fully transparent "
            "pixels mark the area to edit.",
            param="mask",
            code="invalid_image_format",
        )
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(
            f"Invalid file 'mask': it must have the same dimensions as the image "
            f"({image.width}x{image.height}), got {mask.width}x{mask.height}.",
            param="mask",
            code="invalid_mask_size",
        )


@dataclass(frozen=True, slots=True)
class FormRules:
    """Which parts a multipart form may carry on one route, checked as each part arrives.

    The cap is what a complete request can need: each known field once, a few nested
    `name[key]` fields, the images the largest family takes, and one mask and one markup.
    Anything past it, or any part the route does not know, is refused before the rest of
    the body is read."""

    fields: frozenset[str]  # text fields the route knows
    files: frozenset[str]  # part names that carry an upload: image, image[], mask, markup
    images_max: int
    usage: str  # how the openai SDK sends this route's form, for error messages
    nested_max: int = 8
    text_max_bytes: int = 256 * 1024  # a 32,000-character prompt is at most 128 KiB of UTF-8

    @property
    def parts_max(self) -> int:
        singles = len(self.files - {"image", "image[]"})
        return len(self.fields) + self.nested_max + self.images_max + singles


def form_rules(operation: Literal["edit", "variation"], catalog: Catalog) -> FormRules:
    """The parts a multipart edit or variation may carry (checked as they arrive)."""
    if operation == "variation":
        return FormRules(
            fields=VARIATION_FIELDS,
            files=frozenset({"image", "image[]"}),
            images_max=1,
            usage="client.images.create_variation(image=open(...))",
            nested_max=0,
        )
    images_max = max(
        (f.edit_images_max for f in catalog.families.values() if "edit" in f.operations),
        default=1,
    )
    return FormRules(
        fields=EDIT_FIELDS,
        files=frozenset({"image", "image[]", "mask", "markup"}),
        images_max=images_max,
        usage="client.images.edit(image=open(...), prompt=...); or send JSON with "
        '"images": [{"image_url": "data:image/png;base64,..."}]',
    )


@dataclass(frozen=True, slots=True)
class FormTally:
    """The parts admitted so far."""

    parts: int = 0
    images: int = 0
    nested: int = 0
    fields: frozenset[str] = frozenset()  # the text fields' names


def admit_part(
    rules: FormRules, tally: FormTally, name: str, *, has_filename: bool
) -> tuple[str, FormTally]:
    """Admit the next part: its kind ('image', 'mask', 'markup' or 'field') and the new
    tally, or `InvalidRequest` saying why the form is refused."""
    if tally.parts >= rules.parts_max:
        raise InvalidRequest(
            f"Too many parts in the form: this endpoint takes at most {rules.parts_max}.",
            code="too_many_parts",
        )
    tally = replace(tally, parts=tally.parts + 1)
    shown = _clip(name)
    if name in rules.files:
        kind = "image" if name in ("image", "image[]") else name
        if kind == "image":
            if tally.images >= rules.images_max:
                raise InvalidRequest(
                    f"Too many images: this endpoint takes at most {rules.images_max}.",
                    param="image",
                )
            tally = replace(tally, images=tally.images + 1)
        return kind, tally
    if has_filename:
        raise InvalidRequest(
            f"Unexpected file part '{shown}'.", param=shown, code="unknown_parameter"
        )
    top, bracket, _ = name.partition("[")
    if top not in rules.fields:
        raise InvalidRequest(
            f"Unknown parameter: '{shown}'.", param=shown, code="unknown_parameter"
        )
    if name in tally.fields:
        raise InvalidRequest(f"Field '{shown}' was sent twice.", param=shown)
    tally = replace(tally, fields=tally.fields | {name})
    if bracket:
        if tally.nested >= rules.nested_max:
            raise InvalidRequest(
                f"Too many nested '{top}[...]' fields: at most {rules.nested_max}.", param=top
            )
        tally = replace(tally, nested=tally.nested + 1)
    return "field", tally


def _clip(name: str) -> str:
    return name if len(name) <= 40 else name[:39] + "…"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One `ImageRefParam` of a JSON edit, checked for shape: `url` is a data: URL or an
    http(s) URL (what the gateway may fetch is the shell's to decide)."""

    param: str  # where it sits in the body, for errors: images[0].image_url, mask.image_url
    url: str

    @property
    def is_data(self) -> bool:
        return self.url[:5].lower() == "data:"


IMAGE_URL_MAX = 20 * 1024 * 1024  # characters, as OpenAI's schema (ImageRefParam.image_url)


def image_refs(
    body: Mapping[str, object], images_max: int
) -> tuple[tuple[ImageRef, ...], ImageRef | None, dict[str, object]]:
    """Split a JSON edit body into its image references, its mask and the other fields."""
    rest = {k: v for k, v in body.items() if k not in ("images", "mask")}
    images = body.get("images")
    if images is None:
        raise InvalidRequest(
            "Missing required parameter: 'images'.",
            param="images",
            code="missing_required_parameter",
        )
    if not isinstance(images, list) or not 1 <= len(images) <= images_max:
        raise InvalidRequest(
            f"Invalid 'images': expected an array of 1 to {images_max} image references "
            '({"image_url": "data:image/png;base64,..."}).',
            param="images",
        )
    refs = tuple(_ref(item, f"images[{i}]") for i, item in enumerate(images))
    mask = body.get("mask")
    return refs, (None if mask is None else _ref(mask, "mask")), rest


def _ref(item: object, where: str) -> ImageRef:
    if not isinstance(item, dict) or set(item) - {"image_url", "file_id"}:
        raise InvalidRequest(
            f"Invalid '{where}': expected an object with exactly one of 'image_url' or 'file_id'.",
            param=where,
        )
    if "file_id" in item:
        raise InvalidRequest(
            f"Invalid '{where}.file_id': this gateway has no Files API. Send the image as "
            "an 'image_url' (a data: URL) or as a multipart upload.",
            param=f"{where}.file_id",
            code="unsupported_parameter",
        )
    url = item.get("image_url")
    param = f"{where}.image_url"
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"Invalid '{param}': expected a data: URL or an http(s) URL.", param=param
        )
    if len(url) > IMAGE_URL_MAX:
        raise InvalidRequest(
            f"Invalid '{param}': longer than {IMAGE_URL_MAX} characters.",
            param=param,
            code="string_above_max_length",
        )
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        header = url[5:].partition(",")[0]
        if "," not in url or not header.lower().endswith(";base64"):
            raise InvalidRequest(
                f"Invalid '{param}': a data: URL must be base64 (data:image/png;base64,...).",
                param=param,
            )
    elif scheme not in ("http", "https"):
        raise InvalidRequest(
            f"Invalid '{param}': expected a data: URL or an http(s) URL.", param=param
        )
    return ImageRef(param=param, url=url)
