"""A scikit-learn classifier as skl2onnx exports it by default (class probabilities through a ZipMap, a sequence of
{class: probability} maps) is served, its probabilities as a [batch, classes] tensor, over V2 and TF Serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ortserve.bench.server import RunningServer, start_server

FEATURES = 4
ANIMALS = ["cat", "dog", "fish"]


def _classifier(labels: list[int] | list[str], estimator: object = None, zipmap: bool = True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, FEATURES)).astype(np.float32)
    y = np.array(labels)[np.argmax(x[:, :len(labels)], axis=1)]
    fitted = (estimator if estimator is not None else LogisticRegression()).fit(x, y)
    model = to_onnx(fitted, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}, options={"zipmap": zipmap})
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    repo = tmp_path_factory.mktemp("sklearn")
    path = repo / "classifier" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(_classifier([0, 1, 2]).SerializeToString())
    for name, model in (("animals", _classifier(ANIMALS)),
                        ("scaled_animals", _classifier(ANIMALS, make_pipeline(StandardScaler(), LogisticRegression()),
                                                       zipmap=False))):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").write_bytes(model.SerializeToString())
    with start_server(repo, repo / "server.log") as server:
        yield server, path


def _as_exported(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities from the exported file in process, the ZipMap's maps laid out by class."""
    labels, maps = ort.InferenceSession(str(path)).run(None, {"X": rows})
    return labels, np.array([[row[label] for label in sorted(row)] for row in maps], np.float32)


def test_v2_serves_the_probabilities_as_a_tensor(served: tuple[RunningServer, Path]) -> None:
    server, path = served
    client = triton.InferenceServerClient(server.host_port)
    metadata = client.get_model_metadata("classifier")
    assert {"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]} in metadata["outputs"]
    rows = np.random.default_rng(1).standard_normal((5, FEATURES)).astype(np.float32)
    tensor = triton.InferInput("X", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("classifier", [tensor])
    labels, probabilities = _as_exported(path, rows)
    np.testing.assert_array_equal(result.as_numpy("output_label"), labels)
    np.testing.assert_allclose(result.as_numpy("output_probability"), probabilities, rtol=1e-6, atol=1e-7)
    assert "classes in this order: [0, 1, 2]" in server.log()


def test_tf_serving_rows_hold_each_label_and_its_probabilities(served: tuple[RunningServer, Path]) -> None:
    """The row format with a rank-1 INT64 output beside another: each row's label is a JSON number."""
    server, path = served
    rows = np.random.default_rng(2).standard_normal((3, FEATURES)).astype(np.float32)
    response = httpx.post(f"{server.url}/v1/models/classifier:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    labels, probabilities = _as_exported(path, rows)
    predictions = response.json()["predictions"]
    assert [row["output_label"] for row in predictions] == labels.tolist()
    np.testing.assert_allclose([row["output_probability"] for row in predictions], probabilities, rtol=1e-6)


def _animal_rows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((4, FEATURES)).astype(np.float32)


def _best_first(probabilities: np.ndarray) -> list[list[str]]:
    return [[ANIMALS[index] for index in np.argsort(-row, kind="stable")] for row in probabilities]


def test_v2_classification_names_the_classifiers_classes(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    client = triton.InferenceServerClient(server.host_port)
    rows = _animal_rows()
    tensor = triton.InferInput("X", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    plain = client.infer("animals", [tensor]).as_numpy("output_probability")
    result = client.infer("animals", [tensor], outputs=[triton.InferRequestedOutput("output_probability",
                                                                                    class_count=2)])
    answers = [[entry.decode().split(":") for entry in row] for row in result.as_numpy("output_probability")]
    assert [[label for _, _, label in row] for row in answers] == [best[:2] for best in _best_first(plain)]
    assert all(ANIMALS[int(index)] == label for row in answers for _, index, label in row)


@pytest.mark.parametrize(("model", "scores"), [("animals", "output_probability"), ("scaled_animals", "probabilities")])
def test_tf_serving_classify_names_the_classifiers_classes(served: tuple[RunningServer, Path], model: str,
                                                           scores: str) -> None:
    """With the ZipMap of skl2onnx's default export, and without one (a scaler before the classifier and a
    normalizer after it, between its scores and the output)."""
    server, _ = served
    rows = _animal_rows()
    predicted = httpx.post(f"{server.url}/v1/models/{model}:predict", json={"instances": rows.tolist()})
    probabilities = np.array([row[scores] for row in predicted.json()["predictions"]])
    answer = httpx.post(f"{server.url}/v1/models/{model}:classify", json={"examples": [{"X": row.tolist()}
                                                                                       for row in rows]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [[label for label, _ in row] for row in results] == [ANIMALS] * len(rows)
    np.testing.assert_allclose([[score for _, score in row] for row in results], probabilities, rtol=1e-6)
