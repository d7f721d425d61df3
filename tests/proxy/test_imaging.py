"""proxy.imaging: sniffing, probing uploads, checking provider output, converting."""

from __future__ import annotations

import hashlib
import random
import struct
import warnings
import zlib
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from policies.errors import InvalidRequest, ProviderError
from proxy.imaging import (
    OutputInfo,
    check_output,
    convert,
    probe_upload,
    quality_for,
    sniff,
)

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="32"><rect/></svg>'


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def noise(size: tuple[int, int] = (64, 48), mode: str = "RGB", seed: int = 0) -> Image.Image:
    bands = len(mode)
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * bands))


def picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A flat background with a contrasting square: small, compressible, not blank."""
    img = Image.new(mode, size, "navy")
    ImageDraw.Draw(img).rectangle((4, 4, size[0] // 2, size[1] // 2), fill="orange")
    return img


def png_header(width: int, height: int) -> bytes:
    """A PNG that *claims* width x height (a decompression bomb's header) with a tiny body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- sniff -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif")]
)
def test_sniff_raster_formats(fmt: str, expected: str) -> None:
    assert sniff(encode(picture(), fmt)) == expected


@pytest.mark.parametrize(
    "data",
    [
        SVG,
        b"  \n\t" + SVG,
        b"\xef\xbb\xbf" + SVG,
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + SVG,
        b'<?xml version="1.0"?><!-- made by hand --><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"'
        b' "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n' + SVG,
        b"<SVG>",
        b"<svg/>",
        b"<!---->" * 20 + b"<!-- <svg> -->" + SVG,
    ],
)
def test_sniff_svg(data: bytes) -> None:
    assert sniff(data) == "svg"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b"<html><svg></svg></html>",
        b"<svgfoo>",
        b'<?xml version="1.0"?><root/>',
        b"\x89PNG",  # too short to be the full signature
        b"<!---->" * 600,  # a backtracking regex would never finish this one
        b"<!-- " * 1000,
        b"<?xml version='1.0'",
        b"RIFF\0\0\0\0WAVE",
        encode(picture(), "BMP"),
        encode(picture(), "TIFF"),
    ],
)
def test_sniff_unknown(data: bytes) -> None:
    assert sniff(data) == "unknown"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_sniff_never_raises(data: bytes) -> None:
    assert sniff(data) in {"png", "jpeg", "webp", "gif", "svg", "unknown"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"<!--", b"-->", b"<!DOCTYPE", b">", b"<?xml", b"?>", b" ", b"<svg"]))
)
def test_sniff_svg_heads_never_hang(parts: list[bytes]) -> None:
    assert sniff(b"".join(parts)) in {"svg", "unknown"}


# --- probe_upload -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_probe_reads_format_dims_hash_and_size(fmt: str) -> None:
    data = encode(picture((40, 30)), fmt)
    info = probe_upload(data, param="image")
    assert info.format == fmt.lower()
    assert (info.width, info.height) == (40, 30)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.nbytes == len(data)


def _see_through(fmt: str) -> bytes:
    img = picture(mode="RGBA")
    ImageDraw.Draw(img).rectangle((40, 30, 60, 44), fill=(0, 0, 0, 0))
    return encode(img, fmt)


def _palette_with_transparency() -> bytes:
    img = picture().convert("P")
    return encode(img, "PNG", transparency=0)


@pytest.mark.parametrize(
    ("data", "has_alpha"),
    [
        (encode(picture(mode="RGBA"), "PNG"), True),  # an alpha channel, even if opaque
        (encode(picture(mode="LA"), "PNG"), True),
        (_see_through("WEBP"), True),
        (_see_through("GIF"), True),
        (_palette_with_transparency(), True),
        (encode(picture(mode="RGB"), "PNG"), False),
        (encode(picture(mode="L"), "PNG"), False),
        (encode(picture(mode="RGB"), "JPEG"), False),
        (encode(picture(mode="RGB"), "WEBP"), False),
    ],
)
def test_probe_has_alpha(data: bytes, has_alpha: bool) -> None:
    assert probe_upload(data, param="image").has_alpha is has_alpha


def test_probe_empty_is_invalid_image() -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe_upload(b"", param="mask")
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "mask"
    assert "'mask'" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"not an image at all",
        SVG,
        encode(picture(), "BMP"),  # Pillow reads it, the API does not take it
        encode(picture(), "TIFF"),
    ],
)
def test_probe_rejects_unsupported_formats_with_a_fix(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe_upload(data, param="image[]")
    error = caught.value
    assert error.code == "invalid_image_format"
    assert error.param == "image[]"
    assert "unsupported format" in error.message
    assert "'image/png'" in error.message
    assert error.status_hint == 400


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_probe_rejects_a_truncated_header(fmt: str) -> None:
    data = encode(picture(), fmt)
    with pytest.raises(InvalidRequest) as caught:
        probe_upload(data[:14], param="image")
    assert caught.value.code == "invalid_image_format"


def test_probe_rejects_garbage_behind_a_png_signature() -> None:
    with pytest.raises(InvalidRequest):
        probe_upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, param="image")


@pytest.mark.parametrize("side", [100_000, 10_000])  # Pillow errors above 2x its limit, warns below
def test_probe_rejects_decompression_bombs(side: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        probe_upload(png_header(side, side), param="image")
    assert caught.value.code == "invalid_image_format"
    assert "too large" in caught.value.message


def test_probe_rejects_bombs_even_when_warnings_are_ignored() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(InvalidRequest, match="too large"):
            probe_upload(png_header(10_000, 10_000), param="image")


def test_probe_is_lazy_about_pixels() -> None:
    # The header is all probe reads: a huge-but-allowed claim costs nothing.
    info = probe_upload(png_header(4000, 3000), param="image")
    assert (info.width, info.height) == (4000, 3000)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_probe_only_raises_invalid_request(data: bytes) -> None:
    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff"):
        try:
            info = probe_upload(prefix + data, param="image")
        except InvalidRequest as error:
            assert error.code in {"invalid_image", "invalid_image_format"}
        else:
            assert info.format in {"png", "jpeg", "webp", "gif"}


# --- check_output -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_check_output_accepts_good_images(fmt: str) -> None:
    data = encode(picture((64, 48)), fmt)
    info = check_output(data, expected_format=fmt.lower(), expected_size=(64, 48))
    assert info == OutputInfo(format=fmt.lower(), width=64, height=48)  # type: ignore[arg-type]


def test_check_output_without_expected_size() -> None:
    info = check_output(encode(picture((20, 10)), "PNG"), expected_format="png", expected_size=None)
    assert (info.width, info.height) == (20, 10)


def test_check_output_catches_the_wrong_format() -> None:
    with pytest.raises(ProviderError, match="expected jpeg, got png") as caught:
        check_output(encode(picture(), "PNG"), expected_format="jpeg", expected_size=None)
    assert caught.value.code == "invalid_output"


def test_check_output_catches_the_wrong_size() -> None:
    with pytest.raises(ProviderError, match="expected 64x64, got 64x48"):
        check_output(encode(picture(), "PNG"), expected_format="png", expected_size=(64, 64))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_check_output_catches_blank_images(fmt: str) -> None:
    flat = Image.new("RGB", (300, 200), (12, 200, 90))
    with pytest.raises(ProviderError, match="blank"):
        check_output(encode(flat, fmt), expected_format=fmt.lower(), expected_size=(300, 200))


def test_check_output_calls_fully_transparent_blank() -> None:
    clear = noise(mode="RGBA")
    clear.putalpha(0)
    with pytest.raises(ProviderError, match="blank"):
        check_output(encode(clear, "PNG"), expected_format="png", expected_size=None)


def test_check_output_sees_small_detail_on_a_big_image() -> None:
    img = Image.new("RGB", (1024, 1024), "white")
    ImageDraw.Draw(img).rectangle((500, 500, 515, 515), fill="black")
    check_output(encode(img, "PNG"), expected_format="png", expected_size=(1024, 1024))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_check_output_catches_truncated_images(fmt: str) -> None:
    data = encode(noise(), fmt)
    with pytest.raises(ProviderError, match="does not decode"):
        check_output(data[: len(data) // 2], expected_format=fmt.lower(), expected_size=None)


def test_check_output_catches_empty_and_garbage() -> None:
    with pytest.raises(ProviderError, match="empty"):
        check_output(b"", expected_format="png", expected_size=None)
    with pytest.raises(ProviderError, match="got unknown"):
        check_output(b"<html>oops</html>", expected_format="png", expected_size=None)


def test_check_output_catches_a_bomb() -> None:
    with pytest.raises(ProviderError, match="too large"):
        check_output(png_header(100_000, 100_000), expected_format="png", expected_size=None)


def test_check_output_decodes_every_gif_frame() -> None:
    frames = [picture(), picture().rotate(90), noise()]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert check_output(data, expected_format="gif", expected_size=(64, 48)).width == 64
    with pytest.raises(ProviderError, match="does not decode"):
        check_output(data[: len(data) - 200], expected_format="gif", expected_size=None)


def test_check_output_svg_reads_root_dimensions() -> None:
    info = check_output(SVG, expected_format="svg", expected_size=(64, 32))
    assert info == OutputInfo(format="svg", width=64, height=32)
    prolog = b'<?xml version="1.0"?>\n<svg width="10.4px" height=\'20\'><g/></svg>\n'
    assert check_output(prolog, expected_format="svg", expected_size=None).width == 10
    closed = b'<svg width="7" height="9"/>\n'
    assert check_output(closed, expected_format="svg", expected_size=(7, 9)).height == 9


def test_check_output_svg_without_dimensions_is_zero_and_fits_any_size() -> None:
    data = b'<svg viewBox="0 0 5 5" width="100%"><circle r="2"/></svg>'
    info = check_output(data, expected_format="svg", expected_size=(1024, 1024))
    assert (info.width, info.height) == (0, 0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (SVG, "expected 10x10, got 64x32"),
        (b'<svg width="10" height="10"><rect/>', "closed <svg> root"),
        (b"<svg width='10' height='10'>\xff\xfe</svg>", "not UTF-8"),
        (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "b">]><svg/>', "unknown"),
        (b'<svg width="10" height="10"><!ENTITY x "y"></svg>', "entities"),
    ],
)
def test_check_output_svg_failures(data: bytes, match: str) -> None:
    with pytest.raises(ProviderError, match=match):
        check_output(data, expected_format="svg", expected_size=(10, 10))


def test_check_output_svg_expected_but_raster_given() -> None:
    with pytest.raises(ProviderError, match="expected svg, got png"):
        check_output(encode(picture(), "PNG"), expected_format="svg", expected_size=None)


# --- convert ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("target", ["png", "jpeg", "webp", "gif"])
def test_convert_round_trips_between_raster_formats(source: str, target: str) -> None:
    data = convert(encode(picture((50, 30)), source), to_format=target, compression=None)
    assert sniff(data) == target
    assert check_output(data, expected_format=target, expected_size=(50, 30)).format == target


def test_convert_to_jpeg_puts_alpha_on_white() -> None:
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((0, 0, 15, 31), fill=(0, 0, 255, 255))
    data = convert(encode(img, "PNG"), to_format="jpeg", compression=100)
    with Image.open(BytesIO(data)) as out:
        assert out.mode == "RGB"
        right = out.getpixel((28, 16))
        left = out.getpixel((4, 16))
    assert isinstance(right, tuple)
    assert isinstance(left, tuple)
    assert min(right) >= 245  # white, not the hidden red
    assert left[2] >= 200 and left[0] <= 40


@pytest.mark.parametrize("target", ["png", "webp", "gif"])
def test_convert_keeps_transparency_where_the_target_has_it(target: str) -> None:
    img = picture(mode="RGBA")
    img.putpixel((60, 40), (0, 0, 0, 0))
    data = convert(encode(img, "PNG"), to_format=target, compression=None)
    assert probe_upload(data, param="image").has_alpha


@pytest.mark.parametrize("target", ["jpeg", "webp"])
def test_convert_compression_sets_quality(target: str) -> None:
    data = encode(noise((96, 96)), "PNG")
    low = convert(data, to_format=target, compression=0)
    high = convert(data, to_format=target, compression=100)
    assert len(low) < len(high)


def test_convert_keeps_animation_where_the_target_can_animate() -> None:
    frames = [
        picture(),
        picture().rotate(180),
        picture().transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    ]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    for target in ("webp", "png", "gif"):
        with Image.open(BytesIO(convert(gif, to_format=target, compression=None))) as out:
            assert getattr(out, "n_frames", 1) == 3
    with Image.open(BytesIO(convert(gif, to_format="jpeg", compression=None))) as out:
        assert out.format == "JPEG"


def test_convert_refuses_svg_and_garbage() -> None:
    with pytest.raises(ValueError, match="svg"):
        convert(encode(picture(), "PNG"), to_format="svg", compression=None)
    with pytest.raises(ProviderError):
        convert(SVG, to_format="png", compression=None)
    with pytest.raises(ProviderError, match="does not decode"):
        convert(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, to_format="jpeg", compression=None)


def test_convert_is_deterministic() -> None:
    data = encode(picture(mode="RGBA"), "PNG")
    for target in ("png", "jpeg", "webp", "gif"):
        first = convert(data, to_format=target, compression=70)
        assert convert(data, to_format=target, compression=70) == first


@pytest.mark.parametrize(
    ("compression", "quality"), [(None, 95), (100, 95), (0, 1), (50, 48), (-5, 1), (500, 95)]
)
def test_quality_for(compression: int | None, quality: int) -> None:
    assert quality_for(compression) == quality


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_blank_is_judged_in_every_mode(mode: str) -> None:
    """RGB, RGBA, L and LA are judged on their own extremes; the rest on an RGBA copy."""
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    flat = Image.new("RGB", (320, 200), (90, 90, 90))
    dotted = flat.copy()
    ImageDraw.Draw(dotted).rectangle((10, 10, 12, 12), fill=(200, 30, 30))
    for img, blank in ((flat, True), (dotted, False)):
        converted = img.quantize(4) if mode == "P" else img.convert(mode)  # P: no dithering
        data = encode(converted, fmt)
        if blank:
            with pytest.raises(ProviderError, match="blank"):
                check_output(data, expected_format=fmt.lower(), expected_size=(320, 200))
        else:
            check_output(data, expected_format=fmt.lower(), expected_size=(320, 200))
