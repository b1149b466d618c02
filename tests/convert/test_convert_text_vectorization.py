"""Keras models with a TextVectorization layer in front of the network: converted from the token ids on, the layer
written as a tokenizer.json that splits text into the same ids, served from strings to TF Serving's and V2's clients
with the model's own outputs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from ortserve.bench.server import start_server
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import InvalidInput

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")

CORPUS = ["the movie was great", "terrible, awful film.", "I loved it!", "not good at all", "great acting; bad plot",
          "a film of great beauty", "awful acting, awful plot"]
# case, punctuation, unknown words, an empty text, one longer than the sequence, runs of spaces, accents
TEXTS = ["The MOVIE was Great!", "terrible,awful film", "unheard-of words only", "",
         "great " * 12, "not   good\tat all", "café naïve plot"]


def _model(path: Path, *, length: int | None, as_file: bool = False, **layer: object) -> object:
    """A sentiment-like classifier behind a TextVectorization layer, exported as TF Serving takes it."""
    tf.keras.utils.set_random_seed(4)
    vectorize = tf.keras.layers.TextVectorization(max_tokens=40, output_sequence_length=length, **layer)
    vectorize.adapt(CORPUS)
    texts = tf.keras.Input((1,), dtype="string", name="text")
    embedded = tf.keras.layers.Embedding(40, 6, mask_zero=length is None)(vectorize(texts))
    pooled = tf.keras.layers.GlobalAveragePooling1D()(embedded)
    model = tf.keras.Model(texts, tf.keras.layers.Dense(2, activation="softmax", name="sentiment")(pooled))
    if as_file:
        model.save(path)
    else:
        model.export(str(path))
    return model


def _served(repository: Path, model: str, texts: list[str], tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The model's answers to the texts over TF Serving's REST API (rows of one string) and over V2 (BYTES)."""
    with start_server(repository, tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/{model}:predict", json={"instances": [[t] for t in texts]},
                            timeout=60)
        assert answer.status_code == 200, answer.text
        tf_serving = np.asarray(answer.json()["predictions"])
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
        answer = httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        v2 = np.asarray(output["data"]).reshape(output["shape"])
    return tf_serving, v2


@pytest.mark.parametrize("length", [8, None])
def test_text_vectorization_models_serve_strings_as_tensorflow_answers_them(tmp_path: Path,
                                                                            length: int | None) -> None:
    _model(tmp_path / "tf" / "1", length=length)
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    assert result.parity.passed
    config = yaml.safe_load((tmp_path / "repo" / "m" / "config.yaml").read_text())
    assert config["text"]["task"] == "predict" and config["text"]["input_name"] == "text"
    assert config["inputs"] == [{"name": "token_ids", "datatype": "INT64", "dims": [-1, length or -1]}]
    assert (result.version_dir / "tokenizer.json").is_file()
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert provenance["text_vectorization"]["sequence_length"] == (length or "sequence")

    signature = tf.saved_model.load(str(tmp_path / "tf" / "1")).signatures["serving_default"]
    # without a fixed length TensorFlow pads a batch to its longest text: the masked pooling ignores the padding
    expected = np.concatenate([next(iter(signature(text=tf.constant([[text]])).values())).numpy() for text in TEXTS])
    tf_serving, v2 = _served(tmp_path / "repo", "m", TEXTS, tmp_path)
    np.testing.assert_allclose(tf_serving, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v2, expected, rtol=1e-5, atol=1e-6)


def test_a_keras_file_with_a_text_vectorization_layer(tmp_path: Path) -> None:
    model = _model(tmp_path / "model.keras", length=6, as_file=True)
    result = convert(ConvertRequest(source=str(tmp_path / "model.keras"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    assert result.parity.passed
    expected = np.asarray(model(tf.constant([[text] for text in TEXTS])))
    tf_serving, _ = _served(tmp_path / "repo", "m", TEXTS, tmp_path)
    np.testing.assert_allclose(tf_serving, expected, rtol=1e-5, atol=1e-6)


def test_a_split_the_tokenizer_does_not_reproduce_is_refused_by_name(tmp_path: Path) -> None:
    """Bigrams: the graph's ids differ from a word tokenizer's, which the check on sample texts finds."""
    _model(tmp_path / "tf" / "1", length=8, ngrams=2)
    with pytest.raises(InvalidInput, match="not one it reproduces"):
        convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()


def test_a_saved_models_warmup_texts_become_token_ids(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    model = _model(tmp_path / "tf" / "1", length=8)
    (tmp_path / "tf" / "1" / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "tf" / "1" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        request = predict_pb2.PredictRequest()
        request.inputs["text"].CopyFrom(tf.make_tensor_proto([[text] for text in TEXTS], dtype=tf.string))
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    vectorize = next(layer for layer in model.layers if isinstance(layer, tf.keras.layers.TextVectorization))
    with np.load(result.version_dir / "warmup.npz") as samples:
        np.testing.assert_array_equal(samples["token_ids"], np.asarray(vectorize(tf.constant([[t] for t in TEXTS]))))
