"""TensorFlow and Keras sources through `ortserve convert`: functional, Sequential, .h5 and SavedModel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ortserve.convert.pipeline import ConvertRequest, convert

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")


def _functional() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    features = tf.keras.Input((5,), name="features")
    hidden = tf.keras.layers.Dense(16, activation="relu")(features)
    return tf.keras.Model(features, tf.keras.layers.Dense(3, activation="softmax", name="probs")(hidden))


def _sequential() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(1)
    return tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(8, activation="tanh"),
                                tf.keras.layers.Dense(2)])


def _check(version_dir: Path, model: tf.keras.Model) -> str:
    """The converted model answers as the Keras model does; returns its input name."""
    provenance = json.loads((version_dir / "provenance.json").read_text())
    assert provenance["framework"] == "tensorflow" and provenance["exporter"] == "tf2onnx"
    assert provenance["parity"]["passed"]
    (declared,) = provenance["inputs"]
    assert declared["dims"] == ["batch", 5]
    x = np.random.default_rng(3).standard_normal((7, 5)).astype(np.float32)
    session = ort.InferenceSession(str(version_dir / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [declared["name"]]
    (got,) = session.run(None, {declared["name"]: x})
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    return declared["name"]


@pytest.mark.parametrize(("builder", "suffix"), [(_functional, ".keras"), (_sequential, ".keras"),
                                                 (_functional, ".h5")])
def test_keras_files(tmp_path: Path, builder, suffix: str) -> None:
    model = builder()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="keras", inputs=[]))
    name = _check(result.version_dir, model)
    if builder is _functional:
        assert name == "features"


def test_saved_model_directory(tmp_path: Path) -> None:
    model = _functional()
    model.export(str(tmp_path / "saved"))  # a SavedModel with a serving_default signature
    result = convert(ConvertRequest(source=str(tmp_path / "saved"), repository=tmp_path / "repo", model="sm",
                                    inputs=[]))
    assert _check(result.version_dir, model) == "features"


def test_broken_keras_file_and_empty_directory(tmp_path: Path) -> None:
    from ortserve.errors import InvalidInput

    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match="cannot be loaded by TensorFlow"):
        convert(ConvertRequest(source=str(tmp_path / "broken.keras"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="unsupported kind"):
        convert(ConvertRequest(source=str(tmp_path / "empty"), repository=tmp_path / "repo", model="m", inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()
