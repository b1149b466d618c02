"""An uploaded image as the 8-bit RGB picture a person would see, whatever its file stored.

- Orientation: the EXIF orientation tag is applied (phones store photos sideways and tag them; every viewer shows
  them upright).
- Frames: a multi-frame file (animated GIF or WebP, multi-page TIFF) gives its first frame.
- Integer images deeper than 8 bits are scaled to 0-255, not clipped: 16-bit ones (`I;16`, `I;16B`, ...) by
  255/65535; 32-bit ones (`I`) the same when every value fits 16 bits (Pillow opens 16-bit PNGs and TIFFs as
  32-bit), else from the full 32-bit range.
- Float images (`F`) are read as 0.0 (black) to 1.0 (white), values outside clipped.
- Transparency (an alpha channel, or a transparent palette entry or colour) is composited on white, as a browser
  shows the image on a white page.
- Everything else (`1`, `L`, `P`, `CMYK`, `YCbCr`, `LAB`, `HSV`, ...) is Pillow's own conversion to RGB, palettes
  through their palette.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

ORIENTATION_TAG = 0x0112
SIDEWAYS_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 or 270 degrees: width and height swap
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255, 255)


def orientation(image: Image.Image) -> int:
    """The file's EXIF orientation (1: as stored)."""
    return int(image.getexif().get(ORIENTATION_TAG, 1))


def to_rgb(image: Image.Image) -> Image.Image:
    """The first frame, upright, as 8-bit RGB (see the module's docstring for each kind of pixel). Decodes the
    file here, so that a broken one fails here (OSError, as Pillow raises it)."""
    image.load()
    if orientation(image) != 1:  # exif_transpose copies even an upright image: only asked when it turns
        image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _gray(np.asarray(image).astype(np.float32) * (255.0 / 65535.0))
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            return _gray((values.astype(np.float64) - np.iinfo(np.int32).min) * (255.0 / np.iinfo(np.uint32).max))
        return _gray(values.astype(np.float32) * (255.0 / 65535.0))
    if mode == "F":
        return _gray(np.clip(np.asarray(image), 0.0, 1.0) * 255.0)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, _WHITE)
        on_white.alpha_composite(image.convert("RGBA"))
        return on_white.convert("RGB")
    return image.convert("RGB")


def _gray(levels: np.ndarray) -> Image.Image:
    """A gray picture from levels on the 0-255 scale (rounded to the nearest)."""
    return Image.fromarray(np.rint(levels).astype(np.uint8), "L").convert("RGB")
