"""SavedModels whose signature takes encoded images and decodes them in the graph (TF Serving's image models): each
converts from its decoded image batch on, with an `image:` section fitted to the graph's own preprocessing, and
answers TF Serving's clients' base64 pictures as TensorFlow does."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from ortserve.bench.server import start_server
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.errors import InvalidInput

pytestmark = pytest.mark.slow
tf = pytest.importorskip("tensorflow")

SIDE = 64
Prepare = Callable[[object], object]  # one encoded image (a scalar string tensor) into the network's pixels


def _network(dtype: str = "float32") -> tf.keras.Model:
    """A small convolutional classifier of SIDE x SIDE RGB pictures."""
    tf.keras.utils.set_random_seed(11)
    pixels = tf.keras.Input((SIDE, SIDE, 3), dtype=dtype)
    x = tf.keras.layers.Lambda(lambda t: tf.cast(t, tf.float32) / 64.0)(pixels)
    x = tf.keras.layers.Conv2D(6, 5, strides=2, activation="relu")(x)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(pixels, tf.keras.layers.Dense(4, activation="softmax")(x))


def _saved_model(path: Path, prepare: Prepare, network: tf.keras.Model, *, one_image: bool = False,
                 output_dtype: object = None, classes: bool = False) -> object:
    """A SavedModel of `network` behind a signature of encoded images (`image_bytes`), each prepared in the graph
    by `prepare`: mapped over the batch, or (one_image) the batch's first image only; answering `scores`, and the
    best class as `classes` too."""
    dtype = output_dtype or tf.float32

    class Served(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            if one_image:
                images = tf.expand_dims(prepare(image_bytes[0]), 0)
            else:
                images = tf.map_fn(prepare, image_bytes, fn_output_signature=dtype)
            scores = self.network(images)
            return {"scores": scores, "classes": tf.argmax(scores, axis=1)} if classes else {"scores": scores}

    served = Served()
    tf.saved_model.save(served, str(path), signatures={"serving_default": served.serve})
    return served


def _resized(encoded: object) -> object:  # TF Serving's usual export: decode, resize, 0-255 floats
    return tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), [SIDE, SIDE])


def _cropped_unit_range(encoded: object) -> object:  # Inception's: 0-1 floats, central crop, resize
    image = tf.image.convert_image_dtype(tf.io.decode_image(encoded, channels=3, expand_animations=False),
                                         tf.float32)
    return tf.image.resize(tf.image.central_crop(image, 0.875), [SIDE, SIDE])


def _symmetric_range(encoded: object) -> object:  # MobileNet's -1 to 1, Pillow-like antialiased resize
    image = tf.cast(tf.io.decode_png(encoded, channels=3), tf.float32)
    return tf.image.resize(image, [SIDE, SIDE], antialias=True) / 127.5 - 1.0


def _caffe(encoded: object) -> object:  # Keras' ResNet50 and VGG: BGR, ImageNet's means subtracted
    image = tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), [SIDE, SIDE])
    return image[..., ::-1] - tf.constant([103.939, 116.779, 123.68])


def _bicubic(encoded: object) -> object:  # tf.image.resize's bicubic, of a PNG
    return tf.image.resize(tf.io.decode_png(encoded, channels=3), [SIDE, SIDE], method="bicubic")


def _square_bicubic(encoded: object) -> object:  # TF's official EfficientNet and ResNet: a square, bicubic
    shape = tf.io.extract_jpeg_shape(encoded)
    side = tf.cast(SIDE / (SIDE + 32) * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    window = tf.stack([(shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    return tf.image.resize(image, [SIDE, SIDE], method="bicubic")


def _uint8(encoded: object) -> object:  # pixels kept as bytes: the network casts them
    return tf.cast(tf.round(_resized(encoded)), tf.uint8)


# builder, network dtype, what config.yaml's image section must say
CASES = {
    "resized": (_resized, {}, {"resize": {"exact": [SIDE, SIDE], "antialias": False}, "color": "rgb"}),
    "cropped": (_cropped_unit_range, {}, {"crop_fraction": 0.875, "resize": {"exact": [SIDE, SIDE],
                                                                             "antialias": False},
                                          "std": [255.0] * 3}),
    "symmetric": (_symmetric_range, {}, {"resize": {"exact": [SIDE, SIDE]}, "mean": [127.5] * 3,
                                         "std": [127.5] * 3}),
    "caffe": (_caffe, {"classes": True}, {"color": "bgr", "mean": [103.939, 116.779, 123.68], "output": "scores"}),
    "bicubic": (_bicubic, {}, {"resize": {"exact": [SIDE, SIDE], "antialias": False, "method": "bicubic"}}),
    "square": (_square_bicubic, {}, {"crop_fraction": SIDE / (SIDE + 32), "crop_square": True,
                                     "resize": {"exact": [SIDE, SIDE], "antialias": False, "method": "bicubic"}}),
    "one_image": (_resized, {"one_image": True}, {"resize": {"exact": [SIDE, SIDE], "antialias": False}}),
    "uint8": (_uint8, {"output_dtype": tf.uint8}, {"resize": {"exact": [SIDE, SIDE], "antialias": False}}),
}

DECODED_ALIKE = {"cropped", "symmetric", "bicubic"}


def _pictures(picture_format: str) -> list[bytes]:
    """Pictures of three sizes with detail a few pixels wide (where resizing filters differ), encoded."""
    rng = np.random.default_rng(5)
    found = []
    for height, width in [(150, 200), (240, 160), (SIDE, SIDE)]:
        coarse = Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8))
        buffer = io.BytesIO()
        coarse.resize((width, height), Image.Resampling.BICUBIC).save(buffer, picture_format, quality=92)
        found.append(buffer.getvalue())
    return found


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Every case converted into one repository; the TensorFlow modules serving them, by model name."""
    root = tmp_path_factory.mktemp("decoded")
    signatures = {}
    for name, (prepare, options, _) in CASES.items():
        network = _network("uint8" if name == "uint8" else "float32")
        served = _saved_model(root / "tf" / name / "1", prepare, network, **options)
        signatures[name] = served
        result = convert(ConvertRequest(source=str(root / "tf" / name / "1"), repository=root / "repo", model=name,
                                        inputs=[]))
        assert result.parity.passed
    return root / "repo", signatures


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_image_section_is_fitted_to_the_graphs_preprocessing(converted: tuple[Path, dict[str, object]],
                                                                 name: str) -> None:
    repository, _ = converted
    config = yaml.safe_load((repository / name / "config.yaml").read_text())
    image = config["image"]
    assert image["input"] == "image_bytes" and image["layout"] == "nhwc" and image["scores"] == "probabilities"
    for key, value in CASES[name][2].items():
        assert image.get(key, {"color": "rgb"}.get(key)) == value, (key, image)
    for key in {"mean", "std", "output"} - set(CASES[name][2]):  # nothing to normalize, scores first: unwritten
        assert key not in image
    assert [spec["name"] for spec in config["inputs"]] == ["image_bytes"]


def test_tf_serving_clients_send_their_pictures_unchanged(converted: tuple[Path, dict[str, object]],
                                                          tmp_path: Path) -> None:
    repository, signatures = converted
    with start_server(repository, tmp_path / "server.log") as server:
        for name, signature in signatures.items():
            pictures = _pictures("PNG" if name in ("symmetric", "bicubic") else "JPEG")
            if name == "one_image":
                pictures = pictures[:1]
            answered = signature.serve(tf.constant(pictures))
            expected = answered["scores"].numpy()
            body = {"signature_name": "serving_default",
                    "instances": [{"image_bytes": {"b64": base64.b64encode(p).decode()}} for p in pictures]}
            answer = httpx.post(f"{server.url}/v1/models/{name}:predict", json=body, timeout=60)
            assert answer.status_code == 200, (name, answer.text)
            predictions = answer.json()["predictions"]
            if "classes" in answered:  # rows of named outputs
                assert [row["classes"] for row in predictions] == answered["classes"].numpy().tolist()
                predictions = [row["scores"] for row in predictions]
            got = np.asarray(predictions)
            # tf.io.decode_jpeg's fast integer DCT rounds pixels otherwise than Pillow: close, not equal; PNGs
            # and decode_image's JPEGs decode alike
            atol = 1e-4 if name in DECODED_ALIKE else 0.01
            np.testing.assert_allclose(got, expected, atol=atol, err_msg=name)
            assert (got.argmax(axis=1) == expected.argmax(axis=1)).all(), name
            ranked = httpx.post(f"{server.url}/v1/models/{name}:predict_image", timeout=60,
                                files={"image": ("picture", pictures[0])}).json()["predictions"]
            assert ranked[0]["class_id"] == int(expected[0].argmax()), name  # the scores output, ranked
            assert ranked[0]["confidence"] == pytest.approx(float(expected[0].max()), abs=0.01), name
        not_a_picture = {"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}
        answer = httpx.post(f"{server.url}/v1/models/resized:predict", json=not_a_picture, timeout=30)
        assert answer.status_code == 400 and "not an image" in answer.json()["error"]


def test_a_saved_model_warmup_of_pictures_becomes_decoded_samples(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    _saved_model(tmp_path / "tf" / "1", _resized, _network())
    pictures = _pictures("JPEG")
    (tmp_path / "tf" / "1" / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "tf" / "1" / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        request = predict_pb2.PredictRequest()
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(pictures, dtype=tf.string))
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    with np.load(result.version_dir / "warmup.npz") as samples:
        assert samples["image_bytes"].shape == (3, SIDE, SIDE, 3)
        np.testing.assert_allclose(samples["image_bytes"], np.concatenate(
            [_resized(tf.constant(p)).numpy()[None] for p in pictures]), atol=1e-3)


def test_preprocessing_ortserve_cannot_reproduce_is_refused_by_name(tmp_path: Path) -> None:
    def flipped(encoded: object) -> object:  # upside down: no resize or crop of ortserve's does that
        return tf.image.flip_up_down(_resized(encoded))

    _saved_model(tmp_path / "tf" / "1", flipped, _network())
    with pytest.raises(InvalidInput, match=r"does not reproduce .* pixel levels off"):
        convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                               inputs=[]))
    assert not (tmp_path / "repo" / "m").exists()


def test_gray_pictures_are_refused_by_name(tmp_path: Path) -> None:
    def gray(encoded: object) -> object:
        return tf.image.resize(tf.io.decode_jpeg(encoded, channels=1), [SIDE, SIDE])

    tf.keras.utils.set_random_seed(2)
    pixels = tf.keras.Input((SIDE, SIDE, 1))
    network = tf.keras.Model(pixels, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(pixels)))
    _saved_model(tmp_path / "tf" / "1", gray, network)
    with pytest.raises(InvalidInput, match="no batch of fixed-size 3-channel images"):
        convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                               inputs=[]))


def test_a_key_sent_beside_the_pictures_is_answered_back(tmp_path: Path) -> None:
    """Cloud ML's image export: a `key` string input passed to a `key` output, beside the encoded images. ONNX
    names each value once, so the output is the input itself."""
    network = _network()

    class Keyed(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                      tf.TensorSpec([None], tf.string, name="key")])
        def serve(self, image_bytes, key):
            images = tf.map_fn(_resized, image_bytes, fn_output_signature=tf.float32)
            return {"scores": self.network(images), "key": tf.identity(key)}

    keyed = Keyed()
    tf.saved_model.save(keyed, str(tmp_path / "tf" / "1"), signatures={"serving_default": keyed.serve})
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="keyed",
                                    inputs=[]))
    assert [output.name for output in result.parity.outputs] == ["key", "scores"] and result.parity.passed
    pictures = _pictures("JPEG")
    expected = keyed.serve(tf.constant(pictures), tf.constant(["a", "b", "c"]))["scores"].numpy()
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        body = {"instances": [{"image_bytes": {"b64": base64.b64encode(picture).decode()}, "key": key}
                              for picture, key in zip(pictures, "abc", strict=True)]}
        answer = httpx.post(f"{server.url}/v1/models/keyed:predict", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [row["key"] for row in predictions] == ["a", "b", "c"]
    np.testing.assert_allclose([row["scores"] for row in predictions], expected, atol=0.01)


def test_a_graph_that_takes_pictures_of_its_own_size_only(tmp_path: Path) -> None:
    """No resize in the graph (a shape check instead): fitted and checked on pictures of its size; ortserve resizes
    other sizes where TensorFlow refused them."""
    def own_size(encoded: object) -> object:
        image = tf.cast(tf.io.decode_png(encoded, channels=3), tf.float32) / 255.0
        return tf.ensure_shape(image, [SIDE, SIDE, 3])

    served = _saved_model(tmp_path / "tf" / "1", own_size, _network())
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    assert result.parity.passed
    image = yaml.safe_load((tmp_path / "repo" / "m" / "config.yaml").read_text())["image"]
    assert image["resize"]["exact"] == [SIDE, SIDE] and image["std"] == [255.0] * 3
    picture = _pictures("PNG")[2]  # SIDE x SIDE
    expected = served.serve(tf.constant([picture]))["scores"].numpy()
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/m:predict", timeout=60,
                            json={"instances": [{"b64": base64.b64encode(picture).decode()}]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-4)


def _tf1_saved_model(path: Path) -> None:
    """A TF1 export (graph, session, SavedModelBuilder, TF1 control flow): decode, 0-1 floats, central crop,
    resize_bilinear as TF1 did by default (no half-pixel centres), -1 to 1, a linear classifier."""
    tf1 = tf.compat.v1
    tf1.disable_control_flow_v2()
    try:
        graph = tf1.Graph()
        with graph.as_default():
            encoded = tf1.placeholder(tf.string, [None], name="image_bytes")

            def prepare(one: object) -> object:
                image = tf.image.convert_image_dtype(tf.io.decode_jpeg(one, channels=3), tf.float32)
                image = tf.image.central_crop(image, 0.875)
                return (tf1.image.resize_bilinear(image[None], [SIDE, SIDE])[0] - 0.5) * 2.0

            images = tf.map_fn(prepare, encoded, dtype=tf.float32)
            weights = tf1.get_variable("w", initializer=np.random.default_rng(3).standard_normal(
                (SIDE * SIDE * 3, 4)).astype(np.float32) * 0.02)
            scores = tf.nn.softmax(tf.matmul(tf.reshape(images, [-1, SIDE * SIDE * 3]), weights))
            signature = tf1.saved_model.predict_signature_def({"image_bytes": encoded}, {"scores": scores})
            with tf1.Session(graph=graph) as session:
                session.run(tf1.global_variables_initializer())
                builder = tf1.saved_model.Builder(str(path))
                builder.add_meta_graph_and_variables(session, [tf1.saved_model.tag_constants.SERVING],
                                                     signature_def_map={"serving_default": signature})
                builder.save()
    finally:
        tf1.enable_control_flow_v2()


def test_a_tf1_export_with_tf1s_resize(tmp_path: Path) -> None:
    """TF1's loop leaves the stacked images' shape unknown until they run: found by decoding test pictures."""
    _tf1_saved_model(tmp_path / "tf" / "1")
    result = convert(ConvertRequest(source=str(tmp_path / "tf" / "1"), repository=tmp_path / "repo", model="m",
                                    inputs=[]))
    assert result.parity.passed
    image = yaml.safe_load((tmp_path / "repo" / "m" / "config.yaml").read_text())["image"]
    assert image["crop_fraction"] == 0.875 and image["mean"] == image["std"] == [127.5] * 3
    assert image["resize"] == {"exact": [SIDE, SIDE], "antialias": False, "half_pixel_centers": False}
    pictures = _pictures("JPEG")
    expected = tf.saved_model.load(str(tmp_path / "tf" / "1")).signatures["serving_default"](
        image_bytes=tf.constant(pictures))["scores"].numpy()
    with start_server(tmp_path / "repo", tmp_path / "server.log") as server:
        answer = httpx.post(f"{server.url}/v1/models/m:predict", timeout=60, json={
            "instances": [{"b64": base64.b64encode(picture).decode()} for picture in pictures]})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected, atol=0.01)
