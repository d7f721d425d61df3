"""Checks on uploaded images and masks, per model family (what OpenAI accepts)."""

from __future__ import annotations

from collections.abc import Sequence

from policies.catalog import Family
from policies.errors import InvalidRequest
from policies.models import UploadInfo

__all__ = ["check_edit_images", "check_mask"]


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
