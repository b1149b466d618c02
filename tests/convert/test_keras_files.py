"""Keras files as teams have them: written by Keras 2 (TensorFlow up to 2.15, or tf-keras), loaded by Keras 2; a
Lambda layer's Python code run only when the user says the file is trusted; integer ids sampled within the
tables they index."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ortserve.bench.server import start_server
from ortserve.cli import main
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import InvalidInput

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

WORDS = 20


def _keras_2_model() -> Any:
    """Keras 2 functional model calling TensorFlow ops on its tensors (TFOpLambda layers, which Keras 3 cannot
    load), a Lambda layer, and an embedding of WORDS ids."""
    tf_keras.utils.set_random_seed(0)
    features = tf_keras.Input((6,), name="features")
    word_ids = tf_keras.Input((5,), dtype="int32", name="word_ids")
    hidden = tf_keras.layers.Dense(8)(features)
    hidden = tf.concat([tf.nn.relu(hidden) * 2.0, tf.reduce_mean(hidden, axis=-1, keepdims=True)], axis=-1)
    hidden = tf_keras.layers.Lambda(lambda t: t - 1.0)(hidden)
    words = tf_keras.layers.GlobalAveragePooling1D()(tf_keras.layers.Embedding(WORDS, 4)(word_ids))
    joined = tf_keras.layers.Concatenate()([hidden, words])
    return tf_keras.Model([features, word_ids], tf_keras.layers.Dense(3, activation="softmax", name="probs")(joined))


def _rows(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"features": rng.standard_normal((count, 6)).astype(np.float32),
            "word_ids": rng.integers(0, WORDS, (count, 5)).astype(np.int32)}


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_keras_2_file_converts_and_serves_as_keras_2_answers_it(tmp_path: Path, suffix: str) -> None:
    model = _keras_2_model()
    path = tmp_path / f"classifier{suffix}"
    model.save(path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="classifier", inputs=[],
                                    unsafe_deserialization=True))
    assert result.parity.passed
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert provenance["versions"]["tf-keras"] == tf_keras.__version__
    assert provenance["keras_saved_by"] == tf_keras.__version__
    rows = _rows(4)
    expected = model.predict([rows["features"], rows["word_ids"]], verbose=0)
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/classifier:predict",
                            json={"inputs": {name: array.tolist() for name, array in rows.items()}}, timeout=60)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.asarray(answer.json()["outputs"]), expected, rtol=1e-5, atol=1e-6)


def test_a_keras_2_file_without_tf_keras_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "classifier.h5"
    _keras_2_model().save(path)
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # as if not installed: Keras 3 meets the TFOpLambda layers
    with pytest.raises(InvalidInput) as refused:
        convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="classifier", inputs=[]))
    message = str(refused.value)
    assert f"was saved by Keras {tf_keras.__version__}" in message
    assert "TFOpLambda" in message and "pip install --no-deps tf-keras==" in message
    assert not (tmp_path / "repo" / "classifier").exists()


def test_a_lambda_layer_runs_only_with_unsafe_deserialization(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import keras

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 3.0 + 1.0)(inputs)))
    path = tmp_path / "scaled.keras"
    model.save(path)
    command = ["convert", str(path), "--repository", str(tmp_path / "repo"), "--model", "scaled"]
    assert main(command) == 1
    error = capsys.readouterr().err
    assert "holds a Lambda layer of Python code" in error and "--unsafe-deserialization" in error
    assert not (tmp_path / "repo" / "scaled").exists()
    assert main([*command, "--unsafe-deserialization"]) == 0, capsys.readouterr().err
    assert (tmp_path / "repo" / "scaled" / "1" / "model.onnx").is_file()


def test_a_saved_model_of_token_ids_samples_ids_its_embedding_has(tmp_path: Path) -> None:
    """TensorFlow's gather refuses an id out of range on the CPU: ids around zero (-1 among them) stopped the
    conversion of every Keras 2 SavedModel taking token ids."""
    tokens = tf_keras.Input((12,), dtype="int32", name="input_word_ids")
    pooled = tf_keras.layers.GlobalAveragePooling1D()(tf_keras.layers.Embedding(50, 8)(tokens))
    tf.saved_model.save(tf_keras.Model(tokens, tf_keras.layers.Dense(3)(pooled)), str(tmp_path / "encoder"))
    result = convert(ConvertRequest(source=str(tmp_path / "encoder"), repository=tmp_path / "repo", model="encoder",
                                    inputs=[]))
    assert result.parity.passed
