"""Bilinear resizing as TensorFlow's `tf.image.resize` does it (half-pixel centres, no antialiasing), or TF1's
`resize_bilinear` by default (pixel i read at i * scale), for models whose TensorFlow graph resized their images
that way (config.yaml `resize: {antialias: false}`): Pillow's bilinear filter widens with the scale factor when
it shrinks a picture, TensorFlow's always reads the 2x2 nearest pixels, and a model trained behind one sees the
other's pictures as blurred or aliased."""

from __future__ import annotations

import numpy as np


def bilinear_tensorflow(pixels: np.ndarray, height: int, width: int, half_pixel_centers: bool = True) -> np.ndarray:
    """`pixels` (height x width x channels) resized to `height` x `width`, as float32."""
    top, bottom, row_weight = _taps(pixels.shape[0], height, half_pixel_centers)
    left, right, column_weight = _taps(pixels.shape[1], width, half_pixel_centers)
    # the rows needed, gathered as bytes (np.take: a fraction of fancy indexing's time), then blended in place
    rows = np.take(pixels, top, axis=0).astype(np.float32)
    below = np.take(pixels, bottom, axis=0).astype(np.float32)
    below -= rows
    below *= row_weight[:, None, None]
    rows += below
    blended = np.take(rows, left, axis=1)
    east = np.take(rows, right, axis=1)
    east -= blended
    east *= column_weight[None, :, None]
    blended += east
    return blended


def _taps(size_in: int, size_out: int, half_pixel_centers: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two input positions it reads and the second one's weight."""
    scale = np.float32(size_in / size_out)
    position = np.arange(size_out, dtype=np.float32) * scale
    if half_pixel_centers:
        position = (np.arange(size_out, dtype=np.float32) + 0.5) * scale - 0.5
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(position), size_in - 1).astype(np.intp)
    return lower, upper, (position - floor).astype(np.float32)
