"""keras.applications architectures with random weights (none ship offline), made to behave like trained ones
where it matters for conversion: the conversion coverage (benchmarks/conversion_coverage.py) and its CI tests
(tests/convert/test_keras_applications.py). Needs `keras` (the tensorflow extra).

Keras' initial BatchNormalization statistics (mean 0, variance 1) let the deepest EfficientNetV2s grow their
activations to 1e6 until Keras disagrees with itself, top class and all, when an input moves by one part in
1e7; and they shrink others' outputs into a saturated softmax that hides real differences (a wrong MaxPool
padding showed only once the statistics were set). So the statistics are set from one training-mode pass over
random images, as training leaves them, and parity is checked on images from the same range."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

PIXEL_RANGE = (0.0, 255.0)  # the images the statistics come from, and the parity samples' range
IMAGES = 4


def build(name: str, seed: int = 1) -> Any:
    """keras.applications.<name> with random weights and BatchNormalization statistics set from IMAGES random
    images (pixel values in PIXEL_RANGE, dynamic sizes at 224)."""
    import keras

    model = getattr(keras.applications, name)(weights=None)
    size = [224 if dim is None else dim for dim in model.input_shape[1:]]
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode pass then leaves exactly that pass's statistics
    images = np.random.default_rng(seed).uniform(*PIXEL_RANGE, [IMAGES, *size]).astype(np.float32)
    model(images, training=True)
    return model


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)
