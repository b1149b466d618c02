"""TF Serving's REST API, with the request and response shapes its documentation gives."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from ortserve.bench.server import RunningServer


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.url)


def test_model_status_lists_versions(http: httpx.Client) -> None:
    response = http.get("/v1/models/versioned")
    assert response.status_code == 200
    statuses = response.json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["1", "2", "3"]
    assert all(s["state"] == "AVAILABLE" and s["status"] == {"error_code": "OK", "error_message": ""}
               for s in statuses)


def test_status_of_a_version_and_of_a_label(http: httpx.Client) -> None:
    assert [s["version"] for s in http.get("/v1/models/versioned/versions/2").json()["model_version_status"]] == ["2"]
    assert [s["version"] for s in http.get("/v1/models/versioned/labels/canary").json()["model_version_status"]] == [
        "3"]


def test_latest_policy_serves_only_the_newest(http: httpx.Client) -> None:
    statuses = http.get("/v1/models/latest_only").json()["model_version_status"]
    assert [s["version"] for s in statuses] == ["2"]
    assert http.get("/v1/models/latest_only/versions/1").status_code == 404


def test_failed_version_is_reported_as_end(http: httpx.Client) -> None:
    (status,) = http.get("/v1/models/bad_warmup").json()["model_version_status"]
    assert status["state"] == "END"
    assert "warmup" in status["status"]["error_message"]


def test_a_request_to_a_model_with_no_available_version_is_told_why(http: httpx.Client) -> None:
    for response in (http.post("/v1/models/bad_warmup:predict", json={"instances": [[1.0]]}),
                     http.get("/v2/models/bad_warmup")):
        assert response.status_code == 503
        error = response.json()["error"]
        assert "has no available version (version 1: " in error and "warmup" in error, error


def test_metadata_in_tf_serving_form(http: httpx.Client) -> None:
    document = http.get("/v1/models/mlp/metadata").json()
    assert document["model_spec"] == {"name": "mlp", "signature_name": "", "version": "1"}
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["input"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["input"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "784", "name": ""}], "unknown_rank": False}
    assert signature["outputs"]["logits"]["tensor_shape"]["dim"][1]["size"] == "10"


def test_row_format_predict_elides_the_single_output_name(http: httpx.Client, reference) -> None:
    rows = np.random.default_rng(3).standard_normal((2, 784)).astype(np.float32)
    response = http.post("/v1/models/mlp:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200
    predictions = np.array(response.json()["predictions"], dtype=np.float32)
    (expected,) = reference("mlp").run(None, {"input": rows})
    np.testing.assert_allclose(predictions, expected, rtol=1e-6, atol=1e-6)


def test_columnar_format_predict(http: httpx.Client, reference) -> None:
    rows = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    response = http.post("/v1/models/mlp:predict", json={"signature_name": "serving_default", "inputs": rows.tolist()})
    outputs = np.array(response.json()["outputs"], dtype=np.float32)
    (expected,) = reference("mlp").run(None, {"input": rows})
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def _multi_instances() -> list[dict]:
    return [
        {"a": [1, 2, 3, 4], "b": [1, 1, 1, 1], "half": [1, 2, 3], "text": {"b64": base64.b64encode(b"cat").decode()}},
        {"a": [0, 0, 0, 1], "b": [5, 5, 5, 5], "half": [0.5, 0, 0], "text": "dog"},
    ]


def test_named_instances_give_one_object_per_row(http: httpx.Client) -> None:
    response = http.post("/v1/models/multi:predict", json={"instances": _multi_instances()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    assert predictions[0]["total"] == [2, 3, 4, 5]
    assert predictions[1]["scaled"] == [1, 0, 0]
    # outputs whose name ends in _bytes come back base64-encoded
    assert predictions[0]["label_bytes"] == {"b64": base64.b64encode(b"cat").decode()}
    assert base64.b64decode(predictions[1]["label_bytes"]["b64"]) == b"dog"


def test_named_columnar_inputs_give_named_outputs(http: httpx.Client) -> None:
    instances = _multi_instances()
    columns = {name: [row[name] for row in instances] for name in instances[0]}
    outputs = http.post("/v1/models/multi:predict", json={"inputs": columns}).json()["outputs"]
    assert set(outputs) == {"total", "scaled", "label_bytes"}
    assert outputs["total"] == [[2, 3, 4, 5], [5, 5, 5, 6]]


def test_versions_and_labels_route_predict(http: httpx.Client, reference) -> None:
    row = np.full((1, 784), 0.25, np.float32)
    for path, version in (("/versions/1", 1), ("/labels/stable", 2), ("/labels/canary", 3), ("", 3)):
        response = http.post(f"/v1/models/versioned{path}:predict", json={"instances": row.tolist()})
        (expected,) = reference("versioned", version).run(None, {"input": row})
        np.testing.assert_allclose(np.array(response.json()["predictions"], np.float32), expected, rtol=1e-6,
                                   atol=1e-6)


def test_non_finite_values_are_accepted_and_returned(http: httpx.Client) -> None:
    body = b'{"instances": [[NaN, 1, 2], [Infinity, -Infinity, 0]]}'
    response = http.post("/v1/models/fixed:predict", content=body)
    assert response.status_code == 200, response.text
    assert response.text.replace(" ", "") == '{"predictions":[[NaN,3.0,6.0],[Infinity,-Infinity,0.0]]}'


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_name_the_input_no_feature_gives(http: httpx.Client, method: str) -> None:
    response = http.post(f"/v1/models/mlp:{method}", json={"examples": [{"x": 1}]})
    assert response.status_code == 400
    assert response.json()["error"] == "example 0 has no feature 'input' (an input of the model)"


def test_a_scalar_output_is_written_as_a_scalar_in_columns_and_as_one_prediction_in_rows(http: httpx.Client) -> None:
    x = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]]
    columns = http.post("/v1/models/total:predict", json={"inputs": x})
    assert columns.status_code == 200 and columns.json() == {"outputs": 12.0}
    columns = http.post("/v1/models/total:predict", json={"inputs": {"x": x}})
    assert columns.json() == {"outputs": 12.0}
    rows = http.post("/v1/models/total:predict", json={"instances": x})
    assert rows.status_code == 200 and rows.json() == {"predictions": [12.0]}
