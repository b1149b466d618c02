"""Well-known Keras architectures nobody here wrote, with random weights (none ship) whose BatchNormalization
statistics are set as training leaves them (ortserve.examples.keras_applications), through `convert` and then
served: one per family that needed help (captured Normalization constants: EfficientNet; nested XLA functions of
grouped convolutions: ConvNeXt; a dynamic image size shrunk to 1x1 by the parity samples: MobileNetV3; a zero Pad
before MaxPool that ONNX Runtime's Pad_Fusion got wrong: ResNetV2). The whole of keras.applications is
benchmarks/conversion_coverage.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ortserve
from ortserve.convert.pipeline import ConvertRequest, convert

pytestmark = pytest.mark.slow
keras = pytest.importorskip("keras")


@pytest.mark.parametrize("architecture", ["MobileNetV3Small", "EfficientNetB0", "ConvNeXtTiny", "ResNet50V2"])
def test_converts_with_parity_and_serves(tmp_path: Path, architecture: str) -> None:
    from ortserve.examples.keras_applications import PIXEL_RANGE, build

    keras.utils.set_random_seed(0)
    model = build(architecture)
    model.save(tmp_path / "model.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "model.keras"), repository=tmp_path / "repo",
                                    model="m", inputs=[], value_range=PIXEL_RANGE))
    assert result.parity.passed
    image = np.random.default_rng(2).uniform(*PIXEL_RANGE, (2, 224, 224, 3)).astype(np.float32)
    with ortserve.Engine(tmp_path / "repo") as engine:
        (name,) = [spec.name for spec in engine.model("m").resolve().signature.inputs]
        served = engine.predict("m", {name: image})
    (scores,) = served.values()
    np.testing.assert_allclose(scores, np.asarray(model(image, training=False)), rtol=1e-4, atol=1e-5)
