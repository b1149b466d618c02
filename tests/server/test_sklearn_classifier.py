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

from ortserve.bench.server import RunningServer, start_server

FEATURES = 4


def _classifier(labels: list[int] | list[str]):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, FEATURES)).astype(np.float32)
    y = np.array(labels)[np.argmax(x[:, :len(labels)], axis=1)]
    model = to_onnx(LogisticRegression().fit(x, y), x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    repo = tmp_path_factory.mktemp("sklearn")
    path = repo / "classifier" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(_classifier([0, 1, 2]).SerializeToString())
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
