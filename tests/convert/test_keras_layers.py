"""Every kind of layer in ortserve.examples.keras_layers converts with parity, from a Keras 3 `.keras` file and
from a Keras 2 `.h5` file (the benchmark, benchmarks/keras_layer_coverage.py, adds SavedModels and serving)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.examples.keras_layers import CASES, KERAS_2_ONLY, KERAS_3_ONLY, build

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")


@pytest.mark.parametrize("name", sorted(set(CASES) - KERAS_2_ONLY))
def test_a_keras_3_file_of_each_layer_kind_converts_with_parity(tmp_path: Path, name: str) -> None:
    import keras

    path = tmp_path / "model.keras"
    build(name, keras).save(path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="m", inputs=[],
                                    unsafe_deserialization=True))
    assert result.parity.passed, result.parity.text()


@pytest.mark.parametrize("name", sorted(set(CASES) - KERAS_3_ONLY))
def test_a_keras_2_file_of_each_layer_kind_converts_with_parity(tmp_path: Path, name: str) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    path = tmp_path / "model.h5"
    build(name, tf_keras).save(path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="m", inputs=[]))
    assert result.parity.passed, result.parity.text()
