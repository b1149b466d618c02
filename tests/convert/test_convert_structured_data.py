"""Keras models of structured data, with their preprocessing layers inside (the Keras tutorials' way): one input per
column, StringLookup and IntegerLookup tables (one-hot, multi-hot, counts, embedded ids, a mask token),
Normalization, Discretization and CategoryEncoding. Converted, they take the same strings and numbers; served, TF
Serving's REST and gRPC clients get the model's own answers, for known, unknown and missing values alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from ortserve.bench.server import start_server
from ortserve.convert import tensorflow as tf_source
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import InvalidInput
from ortserve.examples.structured_data import AGES, ANIMALS, COLORS, adoption_model, columns

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")

# rows as clients send them: known values, unknown ones ("lizard", age 40), the mask token (""), a colour given
# twice, values on the Discretization boundaries, and -1 (missing) for a CategoryEncoding column
ROWS = [
    {"animal": "cat", "breed": "tabby", "colors": ["black", "white"], "age": 2, "fee": 30.0, "weight": 4.0,
     "rooms": 1},
    {"animal": "lizard", "breed": "", "colors": ["brown", "brown"], "age": 40, "fee": 0.0, "weight": 10.0,
     "rooms": -1},
    {"animal": "dog", "breed": "beagle", "colors": ["green", "black"], "age": 8, "fee": 250.5, "weight": 25.0,
     "rooms": 4},
    {"animal": "bird", "breed": "unknown", "colors": ["white", "white"], "age": 1, "fee": 12.0, "weight": 0.3,
     "rooms": 0},
]


def _expected(model: object) -> np.ndarray:
    """The Keras model's answers to ROWS."""
    answer = model({name: tf.constant(array) for name, array in columns(ROWS).items()})  # type: ignore[operator]
    return np.asarray(answer)


def _served(repository: Path, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The served model's answers to ROWS over TF Serving's REST API (instances, one object per row) and its gRPC
    API (one tensor per column, as tf.make_tensor_proto builds them)."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    instances = [{name: value if isinstance(value, list) else [value] for name, value in row.items()} for row in ROWS]
    with start_server(repository, tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/adoption:predict", json={"instances": instances}, timeout=60)
        assert answer.status_code == 200, answer.text
        rest = np.asarray(answer.json()["predictions"])
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "adoption"
        for name, array in columns(ROWS).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        (output,) = response.outputs.values()
        served_grpc = tf.make_ndarray(output)
    return rest, served_grpc


@pytest.mark.parametrize("source", ["saved_model", "keras"])
def test_structured_data_models_serve_columns_as_keras_answers_them(tmp_path: Path, source: str) -> None:
    path = tmp_path / ("adoption.keras" if source == "keras" else "adoption")
    model = adoption_model()
    if source == "keras":
        model.save(path)
    else:
        model.export(str(path))
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="adoption", inputs=[]))
    assert result.parity.passed
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert provenance["lookup_tables"] == {"tables": 4, "inputs": {"animal": 3, "breed": 4, "colors": 3, "age": 5}}
    expected = _expected(model)
    rest, served_grpc = _served(tmp_path / "repo", tmp_path)
    np.testing.assert_allclose(rest, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served_grpc, expected, rtol=1e-5, atol=1e-6)


def test_a_feature_space_model_serves_rows_as_keras_answers_them(tmp_path: Path) -> None:
    """The Keras tutorial's way: a FeatureSpace adapted to the data, its encoded features into the network, the
    inference model taking the raw columns."""
    keras = tf.keras
    feature_space_class = keras.utils.FeatureSpace
    rng = np.random.default_rng(3)
    columns = {"sex": rng.choice(["m", "f"], 64), "thal": rng.choice(["fixed", "normal", "reversible"], 64),
               "cp": rng.integers(0, 4, 64), "age": rng.uniform(30, 70, 64).astype(np.float32)}
    space = feature_space_class(features={
        "sex": feature_space_class.string_categorical(num_oov_indices=1),
        "thal": feature_space_class.string_categorical(num_oov_indices=1),
        "cp": feature_space_class.integer_categorical(num_oov_indices=1),
        "age": feature_space_class.float_discretized(num_bins=4)}, output_mode="concat")
    space.adapt(tf.data.Dataset.from_tensor_slices(columns).batch(16))
    keras.utils.set_random_seed(5)
    encoded = space.get_encoded_features()
    network = keras.Model(encoded, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(6)(encoded)))
    inputs = space.get_inputs()
    inference = keras.Model(inputs, network(encoded))
    inference.export(str(tmp_path / "heart"))
    convert(ConvertRequest(source=str(tmp_path / "heart"), repository=tmp_path / "repo", model="heart", inputs=[]))

    rows = [{"sex": "f", "thal": "normal", "cp": 2, "age": 41.0}, {"sex": "x", "thal": "", "cp": 9, "age": 90.0},
            {"sex": "m", "thal": "reversible", "cp": 0, "age": 55.5}]
    dtypes = {name: spec.dtype for name, spec in inputs.items()}
    expected = np.asarray(inference({name: tf.constant([[row[name]] for row in rows], dtype=dtypes[name])
                                     for name in rows[0]}))
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/heart:predict", timeout=60,
                            json={"instances": [{name: [value] for name, value in row.items()} for row in rows]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(np.asarray(answer.json()["predictions"]), expected, rtol=1e-5, atol=1e-6)


def test_a_signature_parsing_examples_into_looked_up_columns_is_served(tmp_path: Path) -> None:
    """An Estimator's way: the signature parses serialized tf.Examples and looks a vocabulary column up after the
    parser (its table was left in the graph cut at the parsed features, and refused as an unconverted op)."""
    keras = tf.keras
    keras.utils.set_random_seed(6)
    animal = keras.Input((1,), dtype="string", name="animal")
    fee = keras.Input((1,), dtype="float32", name="fee")
    encoded = keras.layers.concatenate(
        [keras.layers.StringLookup(vocabulary=ANIMALS, output_mode="one_hot")(animal), fee])
    model = keras.Model({"animal": animal, "fee": fee}, keras.layers.Dense(2, activation="softmax")(encoded))
    spec = {"animal": tf.io.FixedLenFeature([1], tf.string, default_value=[""]),
            "fee": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    class Parsing(tf.Module):
        def __init__(self) -> None:
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            return {"scores": self.model(tf.io.parse_example(examples, spec))}

    parsing = Parsing()
    tf.saved_model.save(parsing, str(tmp_path / "parsing"), signatures={"serving_default": parsing.serve})
    convert(ConvertRequest(source=str(tmp_path / "parsing"), repository=tmp_path / "repo", model="parsing",
                           inputs=[]))

    rows = [{"animal": "dog", "fee": 12.5}, {"animal": "lion", "fee": 1.0}, {"animal": "cat", "fee": 0.0}]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "animal": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["animal"].encode()])),
        "fee": tf.train.Feature(float_list=tf.train.FloatList(value=[row["fee"]]))})).SerializeToString()
        for row in rows]
    expected = parsing.serve(tf.constant(examples))["scores"].numpy()
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/parsing:classify", json={"examples": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    scores = [[score for _, score in result] for result in answer.json()["results"]]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_tables_answering_strings_and_floats_are_served(tmp_path: Path) -> None:
    """Tables the other way round: a classifier naming its class with an inverted StringLookup (ids to strings), and
    tf.lookup tables of string to float and string to string in a tf.Module's signature. TensorFlow cannot tell
    the shape of what a table answers; the outputs get ONNX's."""
    keras = tf.keras
    keras.utils.set_random_seed(2)
    features = keras.Input((4,), name="features")
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(features)
    names = keras.layers.StringLookup(vocabulary=["setosa", "versicolor", "virginica"], invert=True,
                                      num_oov_indices=0)(keras.ops.argmax(probabilities, axis=-1))
    classifier = keras.Model(features, {"probabilities": probabilities, "species": names})
    classifier.export(str(tmp_path / "iris"))

    class Prices(tf.Module):
        def __init__(self) -> None:
            keys = tf.constant(["apple", "pear", "plum"])
            self.price = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.constant([1.5, 2.25, 0.75])), default_value=-1.0)
            self.aisle = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.constant(["fruit", "fruit", "stone fruit"])),
                default_value="ask")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, item):
            return {"price": self.price.lookup(item) * 2.0, "aisle": self.aisle.lookup(item)}

    prices = Prices()
    tf.saved_model.save(prices, str(tmp_path / "prices"), signatures={"serving_default": prices.serve})
    for name in ("iris", "prices"):
        convert(ConvertRequest(source=str(tmp_path / name), repository=tmp_path / "repo", model=name, inputs=[]))

    rows = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, -1.0], [-3.0, 1.0, 0.5, 2.0]], dtype=np.float32)
    expected = classifier(rows)  # type: ignore[operator]
    items = ["plum", "kiwi", "apple"]
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        iris = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": rows.tolist()}, timeout=60)
        priced = httpx.post(f"{server.url}/v1/models/prices:predict", json={"instances": items}, timeout=60)
    assert iris.status_code == 200 and priced.status_code == 200, (iris.text, priced.text)
    predictions = iris.json()["predictions"]
    assert [row["species"] for row in predictions] == [name.decode() for name in expected["species"].numpy()]
    np.testing.assert_allclose([row["probabilities"] for row in predictions], expected["probabilities"], rtol=1e-5)
    assert priced.json()["predictions"] == [{"aisle": "stone fruit", "price": 1.5}, {"aisle": "ask", "price": -2.0},
                                            {"aisle": "fruit", "price": 3.0}]


def test_a_vocabulary_file_with_one_unknown_bucket_is_served(tmp_path: Path) -> None:
    """tf.lookup.StaticVocabularyTable of a vocabulary file (a SavedModel asset) with one out-of-vocabulary bucket,
    as an Estimator's vocabulary columns have: unknown keys hash into that bucket (StringToHashBucketFast into
    one bucket, refused before as FarmHash)."""
    vocabulary = tmp_path / "colours.txt"
    vocabulary.write_text("red\ngreen\nblue\n")

    class Colours(tf.Module):
        def __init__(self) -> None:
            self.table = tf.lookup.StaticVocabularyTable(tf.lookup.TextFileInitializer(
                str(vocabulary), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER), num_oov_buckets=1)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, colour):
            return {"id": self.table.lookup(colour)}

    colours = Colours()
    tf.saved_model.save(colours, str(tmp_path / "colours"), signatures={"serving_default": colours.serve})
    vocabulary.unlink()  # the SavedModel keeps its own copy, as an asset
    convert(ConvertRequest(source=str(tmp_path / "colours"), repository=tmp_path / "repo", model="colours",
                           inputs=[]))
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/colours:predict", timeout=60,
                            json={"instances": ["blue", "mauve", "red", ""]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [2, 3, 0, 3]


def test_int32_keys_and_values_are_cast_around_the_label_encoder(tmp_path: Path) -> None:
    """A LabelEncoder holds int64s: tables of int32 keys or values convert with casts around it."""
    import onnxruntime as ort

    class Codes(tf.Module):
        def __init__(self) -> None:
            self.code = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(["x", "y"]), tf.constant([7, 9], tf.int32)), default_value=-1)
            self.price = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant([3, 4], tf.int32), tf.constant([0.5, 1.5])), default_value=0.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32)])
        def serve(self, name, shelf):
            return {"code": self.code.lookup(name), "price": self.price.lookup(shelf)}

    codes = Codes()
    tf.saved_model.save(codes, str(tmp_path / "codes"), signatures={"serving_default": codes.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "codes"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    names, shelves = np.array(["y", "z", "x"], dtype=object), np.array([4, 3, 5], dtype=np.int32)
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    got = dict(zip([output.name for output in session.get_outputs()],
                   session.run(None, {"name": names, "shelf": shelves}), strict=True))
    assert got["code"].dtype == np.int32 and got["code"].tolist() == [9, -1, 7]
    assert got["price"].tolist() == [1.5, 0.5, 0.0]


def test_bincounts_count_each_row_with_its_weights(tmp_path: Path) -> None:
    """tf.math.bincount along the last axis (Keras' multi_hot, count and tf_idf encodings) counts each row on its
    own, ids past the length ignored, weighted or present-only; tf2onnx counted over the whole batch."""
    import onnxruntime as ort

    class Counting(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int32), tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, ids, weights):
            return {"weighted": tf.math.bincount(ids, weights=weights, minlength=5, maxlength=5, axis=-1),
                    "present": tf.math.bincount(ids, minlength=5, maxlength=5, axis=-1, binary_output=True)}

    counting = Counting()
    tf.saved_model.save(counting, str(tmp_path / "counting"), signatures={"serving_default": counting.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "counting"), repository=tmp_path / "repo", model="m",
                                    inputs=[], value_range=(0, 7)))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 7, (6, 4)).astype(np.int32)
    weights = rng.uniform(0.5, 2.0, (6, 4)).astype(np.float32)
    expected = counting.serve(tf.constant(ids), tf.constant(weights))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    got = dict(zip([output.name for output in session.get_outputs()],
                   session.run(None, {"ids": ids, "weights": weights}), strict=True))
    np.testing.assert_allclose(got["weighted"], expected["weighted"].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got["present"], expected["present"].numpy())
    assert got["present"].max() == 1 and got["weighted"].shape == (6, 5)
    # a negative id counts nowhere (ONNX's OneHot would count it from the end), as an id past the length does
    missing = ids.copy()
    missing[:, 0] = -1
    (weighted, _) = session.run(["weighted", "present"], {"ids": missing, "weights": weights})
    np.testing.assert_allclose(weighted, counting.serve(tf.constant(np.where(missing < 0, 6, missing)),
                                                        tf.constant(weights))["weighted"].numpy(), rtol=1e-6)


def test_parity_samples_draw_looked_up_inputs_from_their_vocabularies(tmp_path: Path) -> None:
    """The lookups' keys reach the parity samples: random text would only ever miss the vocabulary."""
    adoption_model().export(str(tmp_path / "adoption"))
    specs = {spec.name: spec for spec in tf_source.load(tmp_path / "adoption", []).inputs}
    assert set(specs["animal"].known or ()) == set(ANIMALS)
    assert set(specs["colors"].known or ()) == set(COLORS)
    assert set(specs["age"].known or ()) == set(AGES)
    assert specs["fee"].known is None and specs["rooms"].known is None
    drawn = specs["animal"].sample(np.random.default_rng(0), -1, 1)
    assert set(drawn.reshape(-1)) <= {*ANIMALS, "unknown0"} and set(drawn.reshape(-1)) & set(ANIMALS)


def _hashed(keras: Any, text: Any) -> Any:
    return keras.layers.Hashing(num_bins=16, output_mode="one_hot")(text)


def _crossed(keras: Any, text: Any) -> Any:
    """A FeatureSpace's crosses: the column crossed with itself."""
    return keras.layers.HashedCrossing(num_bins=16, output_mode="one_hot")((text, text))


@pytest.mark.parametrize(("layer", "op"), [(_hashed, "StringToHashBucketFast"), (_crossed, "SparseCross")])
def test_hashing_layers_are_refused_naming_the_op(tmp_path: Path, layer, op: str) -> None:
    keras = tf.keras
    text = keras.Input((1,), dtype="string", name="city")
    keras.Model(text, keras.layers.Dense(1)(layer(keras, text))).export(str(tmp_path / "hashing"))
    with pytest.raises(InvalidInput, match=rf"{op}.*Hashing or HashedCrossing layer"):
        convert(ConvertRequest(source=str(tmp_path / "hashing"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()
