"""TF Serving's Classify and Regress, over gRPC with TF Serving's own client (tensorflow-serving-api and
tf.train.Example) and over REST: each example's features are the ONNX model's inputs of the same names."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import _model, save

WEIGHTS = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], np.float32)
BUCKET_WEIGHTS = np.array([[0.1, 0.2, -0.3]], np.float32)
CLASS_NAMES = ["cat", "dog", "fish"]


def _inputs() -> list[helper.ValueInfoProto]:
    return [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("bucket", TensorProto.INT64, ["batch", 1])]


def _logits_nodes() -> list[helper.NodeProto]:
    return [helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Cast", ["bucket"], ["bucket_f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["bucket_f", "bw"], ["bucket_term"]),
            helper.make_node("Add", ["xw", "bucket_term"], ["logits"])]


def _weights() -> list[TensorProto]:
    return [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BUCKET_WEIGHTS, "bw")]


def _classifier(with_classes: bool) -> helper.ModelProto:
    """Softmax scores over 3 classes from x [batch, 2] and bucket [batch, 1]; with a `classes` output naming them
    for every row when `with_classes`."""
    nodes = [*_logits_nodes(), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])]
    initializers = _weights()
    if with_classes:
        names = np.array([CLASS_NAMES], dtype=object)
        initializers += [numpy_helper.from_array(names, "names"),
                         numpy_helper.from_array(np.array([0], np.int64), "zero"),
                         numpy_helper.from_array(np.array([1], np.int64), "one")]
        nodes += [helper.make_node("Shape", ["x"], ["x_shape"]),
                  helper.make_node("Slice", ["x_shape", "zero", "one"], ["rows"]),
                  helper.make_node("Concat", ["rows", "one"], ["repeats"], axis=0),
                  helper.make_node("Tile", ["names", "repeats"], ["classes"])]
        outputs.append(helper.make_tensor_value_info("classes", TensorProto.STRING, ["batch", 3]))
    return _model(helper.make_graph(nodes, "classifier", _inputs(), outputs, initializer=initializers))


def _regressor() -> helper.ModelProto:
    """The first logit, one value per row, as the output `value` [batch, 1]."""
    starts, ends = (numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((0, "s"), (1, "e")))
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [*_logits_nodes(), helper.make_node("Slice", ["logits", "s", "e", "axes"], ["value"])]
    return _model(helper.make_graph(nodes, "regressor", _inputs(),
                                    [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch", 1])],
                                    initializer=[*_weights(), starts, ends, axes]))


def _classifier_and_regressor() -> helper.ModelProto:
    """Both of the above, under TensorFlow's output keys: `scores` [batch, 3] and `outputs` [batch, 1]."""
    starts, ends = (numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((0, "s"), (1, "e")))
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [*_logits_nodes(), helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
             helper.make_node("Slice", ["logits", "s", "e", "axes"], ["outputs"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
               helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 1])]
    return _model(helper.make_graph(nodes, "both", _inputs(), outputs, initializer=[*_weights(), starts, ends, axes]))


def _city_scorer() -> helper.ModelProto:
    """A text input: `city` [batch, 1] mapped to a value each (ai.onnx.ml LabelEncoder), -1 for others."""
    node = helper.make_node("LabelEncoder", ["city"], ["outputs"], domain="ai.onnx.ml",
                            keys_strings=["Paris", "Lyon", "Nice"], values_floats=[1.0, 2.0, 3.0], default_float=-1.0)
    graph = helper.make_graph([node], "city_scorer",
                              [helper.make_tensor_value_info("city", TensorProto.STRING, ["batch", 1])],
                              [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)],
                             ir_version=9)


def _logits(x: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ WEIGHTS + bucket.astype(np.float32) @ BUCKET_WEIGHTS


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


X = np.array([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]], np.float32)
BUCKETS = np.array([[2], [0], [7]], np.int64)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("examples")
    save(_classifier(with_classes=False), repository, "classifier")
    save(_classifier(with_classes=True), repository, "named_classes")
    save(_regressor(), repository, "regressor")
    save(_classifier_and_regressor(), repository, "both")
    save(_city_scorer(), repository, "city_scorer")
    save(_classifier_and_regressor(), repository, "parsing")  # as `convert` writes a parsing SavedModel
    (repository / "parsing" / "config.yaml").write_text("examples_input: examples\n")
    with start_server(repository, repository / ".server.log") as running:
        yield running


@pytest.fixture(scope="module")
def tf_serving(server: RunningServer):
    """TF Serving's own client: its PredictionService stub, and tf.train.Example."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield tf, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _example(tf, **features: list) -> object:
    def feature(values: list) -> object:
        if isinstance(values[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if isinstance(values[0], int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    return tf.train.Example(features=tf.train.Features(feature={name: feature(v) for name, v in features.items()}))


def _classify_request(tf, model: str, examples: list, context: object | None = None, signature: str = ""):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if context is None:
        request.input.example_list.examples.extend(examples)
    else:
        request.input.example_list_with_context.examples.extend(examples)
        request.input.example_list_with_context.context.CopyFrom(context)
    return request


def test_classify_over_grpc_answers_each_examples_scores_in_the_models_order(tf_serving) -> None:
    tf, stub = tf_serving
    examples = [_example(tf, x=row.tolist(), bucket=bucket.tolist(), unused=[b"ignored"])
                for row, bucket in zip(X, BUCKETS, strict=True)]
    response = stub.Classify(_classify_request(tf, "classifier", examples), timeout=30)
    assert response.model_spec.name == "classifier" and response.model_spec.version.value == 1
    expected = _softmax(_logits(X, BUCKETS))
    got = [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]
    assert [[label for label, _ in row] for row in got] == [["0", "1", "2"]] * 3
    np.testing.assert_allclose([[score for _, score in row] for row in got], expected, rtol=1e-5)


def test_classify_takes_the_models_classes_and_a_shared_context(tf_serving) -> None:
    tf, stub = tf_serving
    examples = [_example(tf, x=row.tolist()) for row in X]
    context = _example(tf, bucket=[3])
    response = stub.Classify(_classify_request(tf, "named_classes", examples, context, "classification"), timeout=30)
    expected = _softmax(_logits(X, np.full((3, 1), 3)))
    for row, scores in zip(response.result.classifications, expected, strict=True):
        assert [c.label for c in row.classes] == CLASS_NAMES
        np.testing.assert_allclose([c.score for c in row.classes], scores, rtol=1e-5)


def test_regress_over_grpc_answers_one_value_per_example(tf_serving) -> None:
    from tensorflow_serving.apis import regression_pb2

    tf, stub = tf_serving
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "regressor"
    request.input.example_list.examples.extend(_example(tf, x=row.tolist(), bucket=bucket.tolist())
                                               for row, bucket in zip(X, BUCKETS, strict=True))
    response = stub.Regress(request, timeout=30)
    np.testing.assert_allclose([r.value for r in response.result.regressions], _logits(X, BUCKETS)[:, 0], rtol=1e-5)


@pytest.mark.parametrize(("features", "context", "signature", "message"), [
    ({"x": [1.0, 2.0]}, None, "", "example 0 has no feature 'bucket'"),
    ({"x": [1.0, 2.0], "bucket": [0.5]}, None, "", "its feature must be an int64_list, not a float_list"),
    ({"x": [1.0, 2.0, 3.0], "bucket": [1]}, None, "", "feature 'x' has 3 values; input 'x' takes 2"),
    ({"x": [1.0, 2.0], "bucket": [1]}, {"bucket": [2]}, "", "is in example 0 and in the context"),
    ({"x": [1.0, 2.0], "bucket": [1]}, None, "predict_images", "signature 'predict_images' not found"),
])
def test_examples_that_do_not_fit_the_model_are_refused_by_name(tf_serving, features: dict, context: dict | None,
                                                              signature: str, message: str) -> None:
    tf, stub = tf_serving
    request = _classify_request(tf, "classifier", [_example(tf, **features)],
                                None if context is None else _example(tf, **context), signature)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Classify(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()


def test_classify_and_regress_over_rest(server: RunningServer) -> None:
    examples = [{"x": row.tolist()} for row in X]
    answer = requests.post(f"{server.url}/v1/models/named_classes:classify", timeout=30,
                           json={"signature_name": "tensorflow/serving/classify", "context": {"bucket": 1},
                                 "examples": examples})
    assert answer.status_code == 200, answer.text
    expected = _softmax(_logits(X, np.ones((3, 1))))
    result = answer.json()["results"]
    assert [[label for label, _ in row] for row in result] == [CLASS_NAMES] * 3
    np.testing.assert_allclose([[score for _, score in row] for row in result], expected, rtol=1e-5)

    answer = requests.post(f"{server.url}/v1/models/regressor/versions/1:regress", timeout=30,
                           json={"examples": [{"x": row.tolist(), "bucket": int(b[0])} for row, b in zip(X, BUCKETS,
                                                                                                  strict=True)]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["results"], _logits(X, BUCKETS)[:, 0], rtol=1e-5)


@pytest.mark.parametrize(("body", "message"), [
    ({"examples": [{"x": [1.0, 2.0], "bucket": "one"}]}, "takes INT64; its feature is a bytes_list"),
    ({"examples": [{"x": [[1.0, 2.0]], "bucket": 1}]}, "a flat list of one kind of them"),
    ({"examples": [{"x": [1.0, 2.0], "bucket": 1}, {"x": [1.0], "bucket": 1}]}, "has 2 values in example 0 and 1"),
    ({"examples": []}, "the request has no examples"),
    ({"instances": [[1.0, 2.0]]}, "'examples' must be a list"),
])
def test_bad_classify_bodies_are_400_naming_the_problem(server: RunningServer, body: dict, message: str) -> None:
    answer = requests.post(f"{server.url}/v1/models/classifier:classify", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_regress_refuses_a_model_with_several_values_per_example(server: RunningServer) -> None:
    answer = requests.post(f"{server.url}/v1/models/classifier:regress", timeout=30,
                           json={"examples": [{"x": [1.0, 2.0], "bucket": 1}]})
    assert answer.status_code == 400
    assert "regress answers one value per example; output 'probabilities' has 3" in answer.json()["error"]


def _multi_request(tf, tasks: list[tuple[str, str, str]], examples: list):
    """A MultiInferenceRequest of (model, signature, method) tasks on `examples`."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples)
    return request


CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def test_multi_inference_answers_each_task_in_order_from_one_model(tf_serving) -> None:
    tf, stub = tf_serving
    examples = [_example(tf, x=row.tolist(), bucket=bucket.tolist()) for row, bucket in zip(X, BUCKETS, strict=True)]
    request = _multi_request(tf, [("both", "regression", REGRESS), ("both", "classification", CLASSIFY)], examples)
    response = stub.MultiInference(request, timeout=30)
    regression, classification = response.results
    assert [r.model_spec.signature_name for r in response.results] == ["regression", "classification"]
    assert regression.model_spec.name == "both" and regression.model_spec.version.value == 1
    logits = _logits(X, BUCKETS)
    np.testing.assert_allclose([r.value for r in regression.regression_result.regressions], logits[:, 0], rtol=1e-5)
    rows = classification.classification_result.classifications
    np.testing.assert_allclose([[c.score for c in row.classes] for row in rows], _softmax(logits), rtol=1e-5)
    assert [[c.label for c in row.classes] for row in rows] == [["0", "1", "2"]] * 3


@pytest.mark.parametrize(("tasks", "message"), [
    ([], "the request has no tasks"),
    ([("both", "classification", CLASSIFY), ("classifier", "regression", REGRESS)],
     "task 1 names model 'classifier' and task 0 'both'"),
    ([("both", "", CLASSIFY), ("both", "serving_default", REGRESS)], "signature 'serving_default' is evaluated twice"),
    ([("both", "", "tensorflow/serving/predict")], "method_name 'tensorflow/serving/predict' is not supported"),
    ([("both", "predict_images", CLASSIFY)], "signature 'predict_images' not found"),
])
def test_multi_inference_refuses_tasks_tf_serving_refuses(tf_serving, tasks: list, message: str) -> None:
    tf, stub = tf_serving
    request = _multi_request(tf, tasks, [_example(tf, x=[1.0, 2.0], bucket=[1])])
    with pytest.raises(grpc.RpcError) as refused:
        stub.MultiInference(request, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()


def _serialized(tf) -> list[bytes]:
    return [_example(tf, x=row.tolist(), bucket=bucket.tolist()).SerializeToString()
            for row, bucket in zip(X, BUCKETS, strict=True)]


def test_predict_of_serialized_examples_for_a_model_converted_from_a_parsing_signature(tf_serving) -> None:
    """TF Serving's Predict to a model whose signature parsed tf.Examples: `inputs["examples"]`, strings."""
    from tensorflow_serving.apis import predict_pb2

    tf, stub = tf_serving
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "parsing"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(_serialized(tf), dtype=tf.string))
    response = stub.Predict(request, timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), _softmax(_logits(X, BUCKETS)),
                               rtol=1e-5)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"\xff not a proto"], dtype=tf.string))
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'examples': element 0 is not a serialized tf.Example" in refused.value.details()


def test_predict_of_serialized_examples_over_rest_in_both_formats(tf_serving, server: RunningServer) -> None:
    tf, _ = tf_serving
    encoded = [{"b64": base64.b64encode(item).decode()} for item in _serialized(tf)]
    expected = _softmax(_logits(X, BUCKETS))
    for body in ({"instances": encoded}, {"instances": [{"examples": item} for item in encoded]},
                 {"inputs": {"examples": encoded}}):
        answer = requests.post(f"{server.url}/v1/models/parsing:predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        values = answer.json()["predictions" if "instances" in body else "outputs"]
        np.testing.assert_allclose(values["scores"] if isinstance(values, dict) else
                                   [row["scores"] for row in values], expected, rtol=1e-5)
    features = {"inputs": {"x": X.tolist(), "bucket": BUCKETS.tolist()}}  # the model's own inputs still work
    answer = requests.post(f"{server.url}/v1/models/parsing:predict", json=features, timeout=30)
    np.testing.assert_allclose(answer.json()["outputs"]["scores"], expected, rtol=1e-5)
    refused = requests.post(f"{server.url}/v1/models/both:predict", json={"inputs": {"examples": encoded}},
                            timeout=30)  # a model that takes no examples: the input is unknown
    assert refused.status_code == 400 and "examples" in refused.json()["error"]
    text = requests.post(f"{server.url}/v1/models/parsing:predict", json={"inputs": {"examples": ["x: 1"]}},
                         timeout=30)  # a serialized example is binary: JSON carries it as {"b64": ...}
    assert text.status_code == 400
    assert "input 'examples': element 0 is text, not a serialized tf.Example" in text.json()["error"]


def test_a_text_feature_reaches_a_text_input_as_text(tf_serving, server: RunningServer) -> None:
    """A bytes_list feature for a string input is decoded: ONNX Runtime would read bytes as "b'Nice'"."""
    from tensorflow_serving.apis import regression_pb2

    tf, stub = tf_serving
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "city_scorer"
    request.input.example_list.examples.extend([_example(tf, city=[b"Nice"]), _example(tf, city=[b"Oslo"])])
    response = stub.Regress(request, timeout=30)
    assert [result.value for result in response.result.regressions] == [3.0, -1.0]
    body = {"examples": [{"city": "Lyon"}, {"city": {"b64": base64.b64encode(b"Paris").decode()}}]}
    answer = requests.post(f"{server.url}/v1/models/city_scorer:regress", json=body, timeout=30)
    assert answer.json() == {"results": [2.0, 1.0]}
