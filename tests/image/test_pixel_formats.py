"""Images as people send them, through the real server's image API: every Pillow mode and common format of the
same photo classifies as that photo does; EXIF orientation, transparency and multi-frame files as a viewer
shows them. Decoding itself (runtime.pixels) is checked exactly on small pictures."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from ortserve.bench.server import RunningServer
from ortserve.runtime.pixels import ORIENTATION_TAG, to_rgb
from tests.image.conftest import encode

pytestmark = pytest.mark.slow


def _top5(server: RunningServer, image: bytes) -> list[int]:
    response = httpx.post(server.url + "/predict", files={"image": ("upload", image)}, timeout=60)
    assert response.status_code == 200, response.text
    return [prediction["class_id"] for prediction in response.json()["predictions"]]


def _gray_levels(cat: Image.Image) -> np.ndarray:
    return np.asarray(cat.convert("L"))


def _colour(cat: Image.Image) -> list[tuple[str, Image.Image, bytes]]:
    """The colour photo in the colour modes and formats an upload can have: (name, the picture, its file). WebP
    is lossless: the photo's top two classes are close enough that lossy recompression alone can swap them."""
    framed = np.asarray(cat.convert("RGBA")).copy()
    framed[:24], framed[-24:], framed[:, :24], framed[:, -24:] = 0, 0, 0, 0  # a transparent black frame
    rgba, cmyk = Image.fromarray(framed), cat.convert("CMYK")
    palette = cat.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return [("RGB PNG", cat, encode(cat, "PNG")), ("RGB WebP", cat, encode(cat, "WEBP", lossless=True)),
            ("RGB TIFF", cat, encode(cat, "TIFF")), ("RGB BMP", cat, encode(cat, "BMP")),
            ("RGBA PNG", rgba, encode(rgba, "PNG")), ("RGBA TIFF", rgba, encode(rgba, "TIFF")),
            ("RGBA WebP", rgba, encode(rgba, "WEBP", lossless=True)),
            ("CMYK JPEG", cmyk, encode(cmyk, "JPEG", quality=95)), ("CMYK TIFF", cmyk, encode(cmyk, "TIFF")),
            ("YCbCr TIFF", cat.convert("YCbCr"), encode(cat.convert("YCbCr"), "TIFF")),
            ("P PNG", palette, encode(palette, "PNG")), ("P GIF", palette, encode(palette, "GIF")),
            ("P BMP", palette, encode(palette, "BMP"))]


def _gray(cat: Image.Image) -> dict[str, bytes]:
    """The same photo in gray, at every depth: 8-bit, 16-bit (both byte orders), 32-bit integer, 32-bit float."""
    levels = _gray_levels(cat)
    sixteen = levels.astype(np.uint16) * 257  # 0-255 onto 0-65535
    thirty_two = (levels.astype(np.int64) * 0x01010101 - 2**31).astype(np.int32)  # onto the whole int32 range
    gray = Image.fromarray(levels)
    return {
        "L PNG": encode(gray, "PNG"), "L JPEG": encode(gray, "JPEG", quality=95),
        "L WebP": encode(gray, "WEBP", lossless=True), "L TIFF": encode(gray, "TIFF"),
        "L GIF": encode(gray, "GIF"), "L BMP": encode(gray, "BMP"), "LA PNG": encode(gray.convert("LA"), "PNG"),
        "I;16 PNG": encode(Image.fromarray(sixteen), "PNG"), "I;16 TIFF": encode(Image.fromarray(sixteen), "TIFF"),
        "I;16B TIFF": encode(Image.fromarray(sixteen.astype(">u2")), "TIFF"),
        "I TIFF (16-bit values)": encode(Image.fromarray(sixteen.astype(np.int32)), "TIFF"),
        "I TIFF (32-bit values)": encode(Image.fromarray(thirty_two), "TIFF"),
        "F TIFF": encode(Image.fromarray(levels.astype(np.float32) / 255), "TIFF"),
    }


def _agree(name: str, found: list[int], reference: list[int]) -> None:
    assert found[0] == reference[0], (name, found, reference)
    assert len(set(found) & set(reference)) >= 4, (name, found, reference)


def test_colour_modes_and_formats_classify_as_the_picture(image_server: RunningServer, cat: Image.Image) -> None:
    """Each file against its picture as 8-bit RGB (a 256-colour palette is a picture of its own; a transparent
    frame shows white); the photo's PNG against its JPEG."""
    _agree("RGB PNG", _top5(image_server, encode(cat, "PNG")), _top5(image_server, encode(cat, "JPEG", quality=95)))
    for name, picture, image in _colour(cat):
        assert Image.open(io.BytesIO(image)).mode == picture.mode, name
        seen = picture.convert("RGB")
        if picture.mode == "RGBA":  # as a browser shows it on a white page
            seen = Image.alpha_composite(Image.new("RGBA", picture.size, "white"), picture).convert("RGB")
        _agree(name, _top5(image_server, image), _top5(image_server, encode(seen, "PNG")))


def test_gray_at_every_depth_classifies_as_its_8_bit_jpeg(image_server: RunningServer, cat: Image.Image) -> None:
    """A 16-bit PNG used to be clipped to white (it read as a nematode): every depth is scaled instead."""
    reference = _top5(image_server, encode(Image.fromarray(_gray_levels(cat)).convert("RGB"), "JPEG", quality=95))
    for name, image in _gray(cat).items():
        _agree(name, _top5(image_server, image), reference)


def test_bilevel_image_classifies_as_the_same_picture_in_8_bits(image_server: RunningServer,
                                                                 cat: Image.Image) -> None:
    bilevel = cat.convert("1")  # dithered: a different picture, so its own 8-bit copy is the reference
    reference = _top5(image_server, encode(bilevel.convert("RGB"), "PNG"))
    assert _top5(image_server, encode(bilevel, "PNG")) == reference
    assert _top5(image_server, encode(bilevel, "TIFF")) == reference


def test_exif_orientation_is_applied_before_resizing(image_server: RunningServer, cat: Image.Image) -> None:
    """Stored turned with the tag a phone writes, the photo classifies exactly as the upright one."""
    upright = httpx.post(image_server.url + "/predict", files={"image": ("upload", encode(cat, "PNG"))}, timeout=60)
    for tag, stored in ((6, cat.transpose(Image.Transpose.ROTATE_90)), (8, cat.transpose(Image.Transpose.ROTATE_270)),
                        (3, cat.transpose(Image.Transpose.ROTATE_180))):
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = tag
        response = httpx.post(image_server.url + "/predict",
                              files={"image": ("upload", encode(stored, "PNG", exif=exif.tobytes()))}, timeout=60)
        assert response.status_code == 200, response.text
        # the same tensor: the same classes, with confidences equal to the last digit
        assert response.json()["predictions"] == upright.json()["predictions"], tag


def test_the_first_frame_of_an_animation_is_classified(image_server: RunningServer, cat: Image.Image) -> None:
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (*cat.size[::-1], 3), dtype=np.uint8)) for _ in range(2)]
    for fmt, options in (("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {})):
        animated = encode(cat, fmt, save_all=True, append_images=noise, **options)
        assert getattr(Image.open(io.BytesIO(animated)), "n_frames", 1) == 3, fmt
        assert _top5(image_server, animated) == _top5(image_server, encode(cat, fmt, **options)), fmt


# decoding, exactly, on small pictures


def test_sixteen_and_thirty_two_bit_levels_are_scaled_not_clipped() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for stored in (Image.fromarray(levels.astype(np.uint16) * 257),
                   Image.fromarray((levels.astype(np.uint16) * 257).astype(">u2")),
                   Image.fromarray(levels.astype(np.int32) * 257),
                   Image.fromarray((levels.astype(np.int64) * 0x01010101 - 2**31).astype(np.int32)),
                   Image.fromarray(levels.astype(np.float32) / 255)):
        decoded = np.asarray(to_rgb(stored))
        assert decoded.dtype == np.uint8 and decoded.shape == (16, 16, 3)
        np.testing.assert_array_equal(decoded[..., 0], levels, err_msg=stored.mode)
        np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_float_levels_outside_zero_to_one_are_clipped() -> None:
    decoded = np.asarray(to_rgb(Image.fromarray(np.array([[-0.5, 0.5, 2.0]], np.float32))))
    assert decoded[0, :, 0].tolist() == [0, 128, 255]


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere ...
    rgba[:, :2, 3] = 0  # ... transparent on the left, opaque on the right
    rgba[:, 2:, 3] = 255
    rgba[0, 3, 3] = 128  # one half-transparent pixel: red over white
    decoded = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert (decoded[:, :2] == 255).all()
    assert decoded[1, 2].tolist() == [200, 0, 0]
    assert decoded[0, 3].tolist() == [227, 127, 127]
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 10, 20, 30])
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    gray = Image.fromarray(np.array([[7, 9]], np.uint8))
    gray.info["transparency"] = 7  # a transparent gray level (PNG's tRNS)
    assert np.asarray(to_rgb(gray)).tolist() == [[[255, 255, 255], [9, 9, 9]]]


def test_orientation_turns_the_picture_upright() -> None:
    upright = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # stored turned a quarter to the left: shown turned right
    stored = Image.open(io.BytesIO(encode(upright.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif.tobytes())))
    assert np.array_equal(np.asarray(to_rgb(stored)), np.asarray(upright))
