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


def bicubic_tensorflow(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """`pixels` (height x width x channels) resized to `height` x `width` with `tf.image.resize`'s bicubic (Keys'
    kernel, a = -0.5, half-pixel centres, no antialiasing; taps outside the picture weigh 0, the others
    renormalized), as float32."""
    rows, row_weights = _cubic_taps(pixels.shape[0], height)
    columns, column_weights = _cubic_taps(pixels.shape[1], width)
    blended_rows = np.zeros((height, pixels.shape[1], pixels.shape[2]), np.float32)
    for tap in range(4):
        blended_rows += np.take(pixels, rows[:, tap], axis=0) * row_weights[:, tap, None, None]
    blended = np.zeros((height, width, pixels.shape[2]), np.float32)
    for tap in range(4):
        blended += np.take(blended_rows, columns[:, tap], axis=1) * column_weights[None, :, tap, None]
    return blended


def _cubic_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output position: the four input positions it reads and their weights, as TensorFlow computes them
    (the position in float32, its fraction rounded to 1/1024: the kernel read from a table of that step)."""
    scale = np.float32(size_in / size_out)
    position = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    fraction = np.rint((position - floor).astype(np.float64) * _TABLE_STEPS) / _TABLE_STEPS
    offsets = np.arange(-1, 3)
    taps = floor.astype(np.int64)[:, None] + offsets
    distance = np.abs(fraction[:, None] - offsets)
    a = -0.5
    weights = np.where(distance <= 1, ((a + 2) * distance - (a + 3)) * distance * distance + 1,
                       ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a).astype(np.float32)
    weights[(taps < 0) | (taps >= size_in)] = 0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(taps, 0, size_in - 1).astype(np.intp), weights


_TABLE_STEPS = 1024
