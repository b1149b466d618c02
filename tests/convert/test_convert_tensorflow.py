"""TensorFlow and Keras sources through `ortserve convert`: functional, Sequential, .h5 and SavedModel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import ConfigError, InvalidInput

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


def _warmup_requests(saved_model: Path, batches: list[np.ndarray]) -> None:
    """TF Serving's warmup file, written as its documentation shows: PredictionLogs in a TFRecord file, beside
    one Classify log that has no place in a Predict model's samples."""
    from tensorflow_serving.apis import classification_pb2, model_pb2, predict_pb2, prediction_log_pb2

    (saved_model / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(saved_model / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="sm"))
            request.inputs["features"].CopyFrom(tf.make_tensor_proto(batch))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
        classify = prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classification_pb2.ClassificationRequest()))
        writer.write(classify.SerializeToString())


def test_a_saved_models_warmup_requests_become_the_models_warmup_samples(tmp_path: Path) -> None:
    import ortserve

    model = _functional()
    model.export(str(tmp_path / "saved"))
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)]
    _warmup_requests(tmp_path / "saved", batches)
    result = convert(ConvertRequest(source=str(tmp_path / "saved"), repository=tmp_path / "repo", model="sm",
                                    inputs=[]))
    with np.load(result.version_dir / "warmup.npz") as samples:
        assert samples.files == ["features"]
        np.testing.assert_array_equal(samples["features"], np.concatenate(batches))
    with ortserve.Engine(tmp_path / "repo") as engine:
        served = engine.model("sm").resolve()
        assert served.samples is not None and served.samples["features"].shape == (5, 5)
        assert served.calibration is not None and served.calibration.measured


def test_a_truncated_warmup_file_is_named(tmp_path: Path) -> None:
    _functional().export(str(tmp_path / "saved"))
    _warmup_requests(tmp_path / "saved", [np.zeros((2, 5), np.float32)])
    warmup = tmp_path / "saved" / "assets.extra" / "tf_serving_warmup_requests"
    warmup.write_bytes(warmup.read_bytes()[:-3])  # into the last record's checksum
    with pytest.raises(InvalidInput, match=r"warmup_requests: a TFRecord of \d+ bytes at byte \d+ runs past the end"):
        convert(ConvertRequest(source=str(tmp_path / "saved"), repository=tmp_path / "repo", model="sm", inputs=[]))


def test_broken_keras_file_and_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match="cannot be loaded by TensorFlow"):
        convert(ConvertRequest(source=str(tmp_path / "broken.keras"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="unsupported kind"):
        convert(ConvertRequest(source=str(tmp_path / "empty"), repository=tmp_path / "repo", model="m", inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()


def _gelu() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(2)
    return tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(8, activation="gelu"),
                                tf.keras.layers.Dense(3)])


def _normalized() -> tf.keras.Model:
    """A Normalization layer with fixed statistics, as EfficientNet and ConvNeXt begin: Keras 3 captures its mean
    and variance as constant tensors, which tf2onnx left as graph inputs a client would have had to send."""
    tf.keras.utils.set_random_seed(3)
    features = tf.keras.Input((5,), name="features")
    scaled = tf.keras.layers.Normalization(mean=[1.0, 2, 3, 4, 5], variance=[4.0, 4, 9, 9, 1])(features)
    return tf.keras.Model(features, tf.keras.layers.Dense(3, name="scores")(scaled))


@pytest.mark.parametrize("builder", [_gelu, _normalized])
def test_patterns_tf2onnx_mishandles(tmp_path: Path, builder) -> None:
    """Keras' exact GELU (an Erfc, which ONNX lacks: rewritten as 1 - Erf) and captured constants (folded into
    initializers) convert with parity, and the ONNX model takes only the declared input."""
    model = builder()
    model.save(tmp_path / "model.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "model.keras"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    _check(result.version_dir, model)


def test_keras_argmax_converts_with_its_negative_zero_rule(tmp_path: Path) -> None:
    """Keras 3's argmax of floats ranks -0.0 below 0.0, testing the sign bit with a Bitcast to int32, which ONNX
    cannot do (it was refused as an unconverted op); converted as `x < 0 or 1/x < 0`, it picks what Keras picks."""
    features = tf.keras.Input((4,), name="scores")
    model = tf.keras.Model(features, tf.keras.ops.argmax(features, axis=-1))
    model.save(tmp_path / "argmax.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "argmax.keras"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    rows = np.array([[-0.0, 0.0, -1, -2], [0.0, -0.0, -1, -2], [-0.0, -1, -2, -3], [-5, -0.0, -0.0, -1],
                     [1, 2, 3, -np.inf], [-np.inf, -np.inf, -0.0, -1]], dtype=np.float32)
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    (got,) = session.run(None, {"scores": rows})
    np.testing.assert_array_equal(got, np.asarray(model(rows)))
    np.testing.assert_array_equal(got, [1, 0, 0, 1, 2, 2])


def test_a_conversion_error_is_not_reported_as_a_bad_range(tmp_path: Path) -> None:
    """`cli._convert` used to report any ValueError raised in a conversion as `--range must be LOW,HIGH`."""
    import subprocess
    import sys

    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    result = subprocess.run([sys.executable, "-m", "ortserve", "convert", str(tmp_path / "broken.keras"),
                             "--repository", str(tmp_path / "repo"), "--model", "m"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "--range" not in result.stderr
    assert "cannot be loaded by TensorFlow" in result.stderr
    bad_range = subprocess.run([sys.executable, "-m", "ortserve", "convert", str(tmp_path / "broken.keras"),
                                "--repository", str(tmp_path / "repo"), "--model", "m", "--range", "0"],
                               capture_output=True, text=True, timeout=300)
    assert bad_range.returncode == 2 and "--range '0' must be LOW,HIGH" in bad_range.stderr


def test_a_large_model_goes_through_tf2onnx_without_its_weights(tmp_path: Path, monkeypatch) -> None:
    """Past LIFT_WEIGHTS_ABOVE_BYTES the weights become placeholders while tf2onnx converts (it holds a graph's
    constants many times over: VGG16 ran 24 GB out) and initializers again after: the same answers, the same one
    input, the weights in the file. Thresholds lowered so that a small convolutional model takes that path."""
    from ortserve.convert import tensorflow as tf_convert

    monkeypatch.setattr(tf_convert, "LIFT_WEIGHTS_ABOVE_BYTES", 0)
    monkeypatch.setattr(tf_convert, "_LARGE_CONSTANT_BYTES", 1024)
    tf.keras.utils.set_random_seed(4)
    image = tf.keras.Input((16, 16, 3), name="image")
    hidden = tf.keras.layers.Conv2D(8, 3, activation="relu")(image)
    hidden = tf.keras.layers.BatchNormalization()(tf.keras.layers.Conv2D(16, 3)(hidden))
    logits = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(hidden))
    model = tf.keras.Model(image, logits)
    model.save(tmp_path / "model.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "model.keras"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    assert result.parity.passed
    import onnx

    graph = onnx.load(str(result.version_dir / "model.onnx")).graph
    assert [value.name for value in graph.input] == ["image"]
    lifted = {tensor.name for tensor in graph.initializer if tensor.name.endswith(":0")}
    assert len(lifted) >= 2  # the second convolution's and the dense layer's kernels, at least
    x = np.random.default_rng(5).standard_normal((3, 16, 16, 3)).astype(np.float32)
    (got,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"image": x})
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-4, atol=1e-5)


def _dense(seed: int) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    features = tf.keras.Input((5,), name="features")
    return tf.keras.Model(features, tf.keras.layers.Dense(3, name="scores")(features))


def test_a_tf_serving_base_path_converts_into_the_same_version_numbers(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """TF Serving's layout, /models/<name>/<version>/saved_model.pb: each version converted, numbers kept."""
    from ortserve.cli import main
    from ortserve.repository.layout import version_paths

    base = tmp_path / "tf_models" / "scorer"
    models = {1: _dense(1), 3: _dense(3)}
    for number, model in models.items():
        model.export(str(base / str(number)))
    (base / "notes").mkdir()  # what TF Serving ignores, so does the conversion
    with pytest.raises(ConfigError, match=f"ortserve convert {base} --repository REPOSITORY --model scorer"):
        version_paths(base)  # served as it is: the load error says how to convert it

    repository = tmp_path / "onnx_models"
    assert main(["convert", str(base), "--repository", str(repository), "--model", "scorer"]) == 0
    assert sorted(version_paths(repository / "scorer")) == [1, 3]
    rows = np.random.default_rng(4).standard_normal((4, 5)).astype(np.float32)
    for number, model in models.items():
        session = ort.InferenceSession(str(repository / "scorer" / str(number) / "model.onnx"))
        np.testing.assert_allclose(session.run(None, {"features": rows})[0], np.asarray(model(rows)), rtol=1e-5,
                                   atol=1e-6)
        provenance = json.loads((repository / "scorer" / str(number) / "provenance.json").read_text())
        assert provenance["version"] == number and provenance["source"] == str(base / str(number))

    capsys.readouterr()
    assert main(["convert", str(base), "--repository", str(repository), "--model", "scorer"]) == 1
    assert "has version(s) 1, 3 already; nothing was converted" in capsys.readouterr().err


def test_one_saved_model_into_a_chosen_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ortserve.cli import main

    _dense(7).export(str(tmp_path / "saved"))
    repository = tmp_path / "repo"
    command = ["convert", str(tmp_path / "saved"), "--repository", str(repository), "--model", "m", "--version", "7"]
    assert main(command) == 0
    assert (repository / "m" / "7" / "model.onnx").is_file() and not (repository / "m" / "1").exists()
    capsys.readouterr()
    assert main(command) == 1
    assert "model 'm' has a version 7 already; nothing was written" in capsys.readouterr().err


def test_a_tf_serving_model_config_moves_whole_and_serves_with_its_labels(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The team's models.config and its SavedModel base paths in; ONNX versions and a models.config that
    `ortserve serve --model_config_file` serves out, labels and version policies kept."""
    import httpx

    from ortserve.bench.server import start_server
    from ortserve.cli import main

    models = {("scorer", 1): _dense(1), ("scorer", 2): _dense(2), ("ranker", 4): _dense(4)}
    for (name, number), model in models.items():
        model.export(str(tmp_path / "tf" / name / str(number)))
    config_file = tmp_path / "tf" / "models.config"
    config_file.write_text(f"""model_config_list {{
  config {{ name: "scorer" base_path: "{tmp_path / 'tf' / 'scorer'}" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "ranker" base_path: "{tmp_path / 'tf' / 'ranker'}" model_platform: "tensorflow" }}
}}""")
    repository = tmp_path / "onnx"
    assert main(["convert", "--model-config-file", str(config_file), "--repository", str(repository)]) == 0
    migrated = repository / "models.config"
    assert f"ortserve serve --model_config_file {migrated}" in capsys.readouterr().out
    assert f'base_path: "{repository / "scorer"}"' in migrated.read_text()

    rows = np.random.default_rng(5).standard_normal((2, 5)).astype(np.float32)
    with start_server(None, tmp_path / "server.log", "--model_config_file", str(migrated)) as server:
        for path, (name, number) in (("scorer/labels/canary", ("scorer", 2)), ("scorer/labels/stable", ("scorer", 1)),
                                     ("ranker", ("ranker", 4))):
            answer = httpx.post(f"{server.url}/v1/models/{path}:predict", json={"instances": rows.tolist()})
            assert answer.status_code == 200, answer.text
            np.testing.assert_allclose(answer.json()["predictions"], np.asarray(models[name, number](rows)),
                                       rtol=1e-5, atol=1e-6)

    assert main(["convert", "--model-config-file", str(config_file), "--repository", str(repository)]) == 1
    assert "model 'scorer' in" in capsys.readouterr().err  # its versions exist: nothing converted again


def test_convert_asks_for_a_source_or_a_model_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ortserve.cli import main

    assert main(["convert", "--repository", str(tmp_path)]) == 2
    assert "give SOURCE and --model (or --model-config-file)" in capsys.readouterr().err
    assert main(["convert", "x.keras", "--model-config-file", "models.config", "--repository", str(tmp_path)]) == 2
    assert "give no SOURCE or --model" in capsys.readouterr().err


def _parsing_saved_model(path: Path) -> tuple[object, object]:
    """A Keras model behind a signature that parses serialized tf.Examples (TF Serving's classic export): features
    `x` (2 floats) and `bucket` (1 int64)."""
    tf.keras.utils.set_random_seed(6)
    x, bucket = tf.keras.Input((2,), name="x"), tf.keras.Input((1,), name="bucket")
    joined = tf.keras.layers.Concatenate()([x, tf.keras.layers.Lambda(lambda b: tf.cast(b, tf.float32))(bucket)])
    model = tf.keras.Model([x, bucket], tf.keras.layers.Dense(3, activation="softmax")(joined))
    spec = {"x": tf.io.FixedLenFeature([2], tf.float32), "bucket": tf.io.FixedLenFeature([1], tf.int64)}

    class Parsing(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, spec)
            return {"scores": self.model([parsed["x"], parsed["bucket"]])}

    module = Parsing()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return module, model


def test_a_signature_that_parses_tf_examples_converts_from_its_features_and_serves_them(tmp_path: Path) -> None:
    import base64

    import httpx
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from ortserve.bench.server import start_server

    module, _ = _parsing_saved_model(tmp_path / "tf" / "1")
    rng = np.random.default_rng(8)
    x, bucket = rng.standard_normal((4, 2)).astype(np.float32), rng.integers(0, 9, (4, 1))
    serialized = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
        "bucket": tf.train.Feature(int64_list=tf.train.Int64List(value=b.tolist()))})).SerializeToString()
        for row, b in zip(x, bucket, strict=True)]
    (tmp_path / "tf" / "1" / "assets.extra").mkdir()  # its TF Serving warmup: a Predict of the examples
    with tf.io.TFRecordWriter(str(tmp_path / "tf" / "1" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        request = predict_pb2.PredictRequest()
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    repository = tmp_path / "repo"
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=repository, model="parsing",
                                    inputs=[]))
    assert result.parity.passed
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert sorted((spec["name"], spec["dtype"], spec["dims"]) for spec in provenance["inputs"]) == [
        ("bucket", "int64", ["batch", 1]), ("x", "float32", ["batch", 2])]  # in the parser's order
    assert "examples_input: examples" in (repository / "parsing" / "config.yaml").read_text()
    with np.load(result.version_dir / "warmup.npz") as samples:  # the warmup's examples, as features
        np.testing.assert_array_equal(samples["x"], x)
        np.testing.assert_array_equal(samples["bucket"], bucket)

    expected = module.serve(tf.constant(serialized))["scores"].numpy()
    with start_server(repository, tmp_path / "server.log") as server:
        body = {"instances": [{"b64": base64.b64encode(item).decode()} for item in serialized]}
        answer = httpx.post(f"{server.url}/v1/models/parsing:predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=1e-5, atol=1e-6)


def test_a_signature_parsing_sparse_features_is_refused_by_name(tmp_path: Path) -> None:
    spec = {"tokens": tf.io.VarLenFeature(tf.int64), "x": tf.io.FixedLenFeature([2], tf.float32)}

    class Sparse(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, spec)
            counted = tf.cast(tf.sparse.reduce_sum(parsed["tokens"], axis=1), tf.float32)
            return {"total": counted + tf.reduce_sum(parsed["x"], axis=1)}

    module = Sparse()
    tf.saved_model.save(module, str(tmp_path / "sparse"), signatures={"serving_default": module.serve})
    with pytest.raises(InvalidInput, match="parses 1 sparse and 0 ragged features"):
        convert(ConvertRequest(source=str(tmp_path / "sparse"), repository=tmp_path / "repo", model="m", inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()


CUSTOM_LAYER = '''
import keras


@keras.saving.register_keras_serializable(package="ortserve_test_layers")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


def test_a_keras_model_with_custom_layers_converts_once_their_module_is_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import os
    import subprocess
    import sys

    (tmp_path / "ortserve_test_layers.py").write_text(CUSTOM_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    layers = importlib.import_module("ortserve_test_layers")
    features = tf.keras.Input((4,), name="features")
    model = tf.keras.Model(features, tf.keras.layers.Dense(2, name="out")(layers.Scale(3.0)(features)))
    model.save(tmp_path / "custom.keras")

    command = [sys.executable, "-m", "ortserve", "convert", str(tmp_path / "custom.keras"), "--repository",
               str(tmp_path / "repo"), "--model", "custom"]
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    refused = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert refused.returncode == 1 and "ortserve convert --import MODULE" in refused.stderr
    converted = subprocess.run([*command, "--import", "ortserve_test_layers"], capture_output=True, text=True,
                               env=environment, timeout=300)
    assert converted.returncode == 0, converted.stderr[-2000:]
    rows = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "repo" / "custom" / "1" / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {"features": rows})[0], np.asarray(model(rows)), rtol=1e-5,
                               atol=1e-6)


def test_a_saved_model_without_serving_default_converts_the_signature_named(tmp_path: Path) -> None:
    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def doubled(self, x):
            return {"y": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def shifted(self, x):
            return {"y": x + 1.0}

    module = Two()
    tf.saved_model.save(module, str(tmp_path / "two"), signatures={"doubled": module.doubled,
                                                                   "shifted": module.shifted})
    tf.saved_model.save(module, str(tmp_path / "one"), signatures={"shifted": module.shifted})
    with pytest.raises(InvalidInput, match="has no signature 'serving_default'; its signatures are 'doubled', "
                                           "'shifted': give one with --signature"):
        convert(ConvertRequest(source=str(tmp_path / "two"), repository=tmp_path / "repo", model="m", inputs=[]))
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    for source, signature, expected in (("two", "doubled", rows * 2), ("one", None, rows + 1)):
        result = convert(ConvertRequest(source=str(tmp_path / source), repository=tmp_path / "repo", model=source,
                                        inputs=[], signature=signature))
        (answer,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(None, {"x": rows})
        np.testing.assert_allclose(answer, expected)


def test_a_keras_model_of_dict_inputs_and_outputs_keeps_their_keys(tmp_path: Path) -> None:
    tf.keras.utils.set_random_seed(3)
    numbers = tf.keras.Input((4,), name="numbers")
    tokens = tf.keras.Input((6,), dtype="int32", name="tokens")
    pooled = tf.keras.layers.GlobalAveragePooling1D()(tf.keras.layers.Embedding(10, 8)(tokens))
    hidden = tf.keras.layers.Concatenate()([tf.keras.layers.Dense(8, activation="relu")(numbers), pooled])
    model = tf.keras.Model({"numbers": numbers, "tokens": tokens},  # output keys other than the layers' names
                           {"score": tf.keras.layers.Dense(1, name="regression_head")(hidden),
                            "probs": tf.keras.layers.Dense(3, activation="softmax", name="classifier")(hidden)})
    model.save(tmp_path / "multi.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "multi.keras"), repository=tmp_path / "repo",
                                    model="multi", inputs=[], value_range=(0.0, 9.0)))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    assert [spec.name for spec in session.get_inputs()] == ["numbers", "tokens"]
    assert [spec.name for spec in session.get_outputs()] == ["probs", "score"]
    rng = np.random.default_rng(5)
    feeds = {"numbers": rng.standard_normal((3, 4)).astype(np.float32),
             "tokens": rng.integers(0, 10, (3, 6)).astype(np.int32)}
    expected = model(feeds)
    for name, answer in zip(["probs", "score"], session.run(None, feeds), strict=True):
        np.testing.assert_allclose(answer, np.asarray(expected[name]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_keras_recurrent_layers_convert(tmp_path: Path, layer: str) -> None:
    """Keras 3 runs them in a while loop over TensorLists; frozen with its control flow lowered, tf2onnx could not
    recognise the loop and left TensorListReserve, which onnx.checker refuses."""
    tf.keras.utils.set_random_seed(4)
    model = tf.keras.Sequential([tf.keras.Input((10,)), tf.keras.layers.Reshape((5, 2)),
                                 getattr(tf.keras.layers, layer)(8), tf.keras.layers.Dense(2)])
    model.save(tmp_path / "recurrent.keras")
    result = convert(ConvertRequest(source=str(tmp_path / "recurrent.keras"), repository=tmp_path / "repo",
                                    model="recurrent", inputs=[]))
    operators = {node.op_type for node in onnx.load(result.version_dir / "model.onnx").graph.node}
    assert not any(operator.startswith("TensorList") for operator in operators)
    rows = np.random.default_rng(6).standard_normal((3, 10)).astype(np.float32)
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    (answer,) = session.run(None, {session.get_inputs()[0].name: rows})
    np.testing.assert_allclose(answer, np.asarray(model(rows)), rtol=1e-4, atol=1e-5)


def test_classify_and_regress_warmup_logs_become_samples_too(tmp_path: Path) -> None:
    """TF Serving's warmup file of a model served for Classify: the examples' features, by input name."""
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2, regression_pb2

    _functional().export(str(tmp_path / "saved"))
    rows = np.random.default_rng(7).standard_normal((3, 5)).astype(np.float32)

    def example(row: np.ndarray) -> object:
        return tf.train.Example(features=tf.train.Features(feature={
            "features": tf.train.Feature(float_list=tf.train.FloatList(value=row.tolist())),
            "ignored": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))

    classify = classification_pb2.ClassificationRequest()
    classify.input.example_list.examples.extend([example(rows[0]), example(rows[1])])
    regress = regression_pb2.RegressionRequest()
    regress.input.example_list.examples.append(example(rows[2]))
    (tmp_path / "saved" / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "saved" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)).SerializeToString())
        writer.write(prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)).SerializeToString())
    result = convert(ConvertRequest(source=str(tmp_path / "saved"), repository=tmp_path / "repo", model="sm",
                                    inputs=[]))
    with np.load(result.version_dir / "warmup.npz") as samples:
        assert samples.files == ["features"]
        np.testing.assert_array_equal(samples["features"], rows)


def test_a_graph_that_changes_its_table_is_refused_naming_the_op(tmp_path: Path) -> None:
    """A table the serving function inserts into cannot be frozen into constants (tables only read are: see
    test_convert_structured_data.py): the graph would keep it as an input no client sends (it failed with a zip()
    error from renaming the inputs)."""

    class Remembering(tf.Module):
        def __init__(self) -> None:
            self.seen = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, words):
            self.seen.insert(words, tf.ones_like(words, dtype=tf.int64))
            return {"seen": self.seen.lookup(words)}

    remembering = Remembering()
    tf.saved_model.save(remembering, str(tmp_path / "tf" / "1"), signatures={"serving_default": remembering.serve})
    with pytest.raises(InvalidInput, match=r"cannot be frozen into constants \(its graph runs .*LookupTableInsertV2"):
        convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                               inputs=[]))


def test_a_saved_model_of_an_ops_extension_not_loaded_names_the_op(tmp_path: Path) -> None:
    """TF Text's ops (CaseFoldUTF8, WordpieceTokenize...) are registered only once tensorflow_text is imported:
    the refusal names the op and --import, not TensorFlow's advice about tf.contrib."""
    from tensorflow.core.protobuf import saved_model_pb2

    class Lower(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, texts):
            return {"folded": tf.strings.lower(texts)}

    lower = Lower()
    tf.saved_model.save(lower, str(tmp_path / "tf"), signatures={"serving_default": lower.serve})
    saved = saved_model_pb2.SavedModel.FromString((tmp_path / "tf" / "saved_model.pb").read_bytes())
    for function in saved.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "StringLower":
                node.op = "CaseFoldUTF8"  # as TF Text's normalizer would have it
    (tmp_path / "tf" / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(InvalidInput, match=r"runs CaseFoldUTF8, an op of a TensorFlow extension .* --import") as error:
        convert(ConvertRequest(source=str(tmp_path / "tf"), repository=tmp_path / "repo", model="m", inputs=[]))
    assert "contrib" not in str(error.value)


def test_a_tf_cond_reading_the_input_in_its_branches_converts(tmp_path: Path) -> None:
    """The branches become ONNX If subgraphs reading the input from the outer scope: renaming the input (tf2onnx
    calls it x:0) must reach them, or the checker finds a value no node produces."""
    module = tf.Module()
    module.serve = tf.function(
        lambda x: {"y": tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)},
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "conditional"), signatures={"serving_default": module.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "conditional"), repository=tmp_path / "repo",
                                    model="conditional", inputs=[]))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    for x in (np.full((2, 4), 0.5, np.float32), np.full((2, 4), -0.5, np.float32)):  # each branch
        np.testing.assert_allclose(session.run(["y"], {"x": x})[0], module.serve(tf.constant(x))["y"].numpy())


def test_a_saved_model_computing_spectrograms_of_waveforms_converts(tmp_path: Path) -> None:
    """TensorFlow's audio tutorial exports its classifier with the preprocessing: tf.signal.stft, tf.abs, a mel
    matrix. tf2onnx's RFFT layout made its ComplexAbs refuse the batch of frames; the RFFT is ONNX's DFT now."""
    mel = tf.signal.linear_to_mel_weight_matrix(16, 129, 16000)
    weights = tf.constant(np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32))

    def classify(waveform):
        magnitudes = tf.abs(tf.signal.stft(waveform, frame_length=255, frame_step=128))
        features = tf.math.log(tf.tensordot(magnitudes, mel, 1) + 1e-6)
        return {"scores": tf.matmul(tf.reduce_mean(features, axis=1), weights),
                "power": tf.math.real(tf.signal.rfft(waveform[:, :64])) ** 2}

    module = tf.Module()
    module.serve = tf.function(classify, input_signature=[tf.TensorSpec([None, 4000], tf.float32, name="waveform")])
    tf.saved_model.save(module, str(tmp_path / "audio"), signatures={"serving_default": module.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "audio"), repository=tmp_path / "repo", model="audio",
                                    inputs=[]))
    assert {node.op_type for node in onnx.load(str(result.version_dir / "model.onnx")).graph.node} >= {"DFT"}
    waveform = np.sin(np.linspace(0, 800, 2 * 4000, dtype=np.float32)).reshape(2, 4000)
    expected = module.serve(tf.constant(waveform))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    scores, power = session.run(["scores", "power"], {"waveform": waveform})
    np.testing.assert_allclose(scores, expected["scores"].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(power, expected["power"].numpy(), rtol=1e-3, atol=1e-2)


def test_magnitudes_of_a_2d_rfft_still_go_to_tf2onnx(tmp_path: Path) -> None:
    """ComplexAbs of anything but an RFFT is tf2onnx's to convert (its RFFT2D handler lays the parts out its own
    way): the delegation passed its handler a list as keyword arguments, and the op was left unconverted."""
    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": tf.abs(tf.signal.rfft2d(tf.reshape(x, (-1, 4, 4))))},
                               input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
    tf.saved_model.save(module, str(tmp_path / "rfft2d"), signatures={"serving_default": module.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "rfft2d"), repository=tmp_path / "repo", model="rfft2d",
                                    inputs=[]))
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    (served,) = ort.InferenceSession(str(result.version_dir / "model.onnx")).run(["y"], {"x": x})
    np.testing.assert_allclose(served, module.serve(tf.constant(x))["y"].numpy(), rtol=1e-4, atol=1e-4)
