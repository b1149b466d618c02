"""Variant groups: one name on every API, members chosen by policy, unavailable members skipped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from ortserve.bench.server import RunningServer, metric_samples, start_server
from ortserve.examples.models import mlp, multi_io, save
from ortserve.protos.tensorflow_serving.apis import prediction_service_pb2_grpc
from tests.conftest import write_config
from tests.tf_predict import predict_request

ROW = np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("groups")
    save(mlp(hidden=32, seed=1), repo, "fast")
    save(mlp(hidden=8192, seed=2), repo, "slow")  # the same contract, about a hundred times the work
    save(mlp(hidden=32, seed=3), repo, "spare")
    for name, group in {"quickest": {"members": ["slow", "fast"]},
                        "turns": {"members": ["fast", "slow"], "policy": "round_robin"},
                        "weighted": {"members": ["fast", "slow"], "policy": "weighted",
                                     "weights": {"fast": 3, "slow": 1}},
                        "pair": {"members": ["fast", "spare"], "policy": "round_robin"}}.items():
        (repo / name).mkdir()
        write_config(repo, name, {"group": group})
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo, repo / ".server.log", "--model-control", "explicit") as running:
        yield running


@pytest.fixture(scope="module")
def answers(repo: Path) -> dict[str, np.ndarray]:
    """What each member answers to ROW, in process: tells which member served a group's request."""
    return {name: ort.InferenceSession(str(repo / name / "1" / "model.onnx")).run(None, {"input": ROW})[0]
            for name in ("fast", "slow", "spare")}


def _member(answer: np.ndarray, answers: dict[str, np.ndarray]) -> str:
    return next(name for name, expected in answers.items() if np.allclose(answer, expected, rtol=1e-4, atol=1e-4))


def _v2(client: httpx.Client, model: str) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW.ravel().tolist()}]})


def test_a_group_is_served_under_its_own_name_on_every_api(server: RunningServer, answers) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = _v2(client, "turns").json()
        assert response["model_name"] == "turns" and response["model_version"] == "1"
        served = {_member(np.array(response["outputs"][0]["data"]), answers)}
        tfs = client.post("/v1/models/turns:predict", json={"instances": ROW.tolist()}).json()
        served.add(_member(np.array(tfs["predictions"]), answers))
        metadata = client.get("/v2/models/turns").json()
        assert metadata["name"] == "turns" and metadata["versions"] == ["1"]
        assert [tensor["name"] for tensor in metadata["inputs"]] == ["input"]
        assert client.get("/v1/models/turns").json()["model_version_status"][0]["state"] == "AVAILABLE"
        assert client.get("/v2/models/turns/ready").status_code == 200
    assert served == {"fast", "slow"}  # round robin: one each

    triton = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("input", [1, 784], "FP32")
    tensor.set_data_from_numpy(ROW)
    result = triton.infer("turns", [tensor])
    assert result.get_response().model_name == "turns"
    assert _member(result.as_numpy("logits"), answers) in {"fast", "slow"}
    assert triton.get_model_metadata("turns").name == "turns"

    request = predict_request("turns", ROW)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert response.model_spec.name == "turns" and response.model_spec.version.value == 1


def test_policies_send_requests_where_they_say(server: RunningServer, answers) -> None:
    with httpx.Client(base_url=server.url) as client:
        def members(model: str, count: int) -> Counter[str]:
            return Counter(_member(np.array(_v2(client, model).json()["outputs"][0]["data"]), answers)
                           for _ in range(count))

        turns = members("turns", 100)
        assert turns == Counter({"fast": 50, "slow": 50})
        weighted = members("weighted", 1000)
        assert abs(weighted["fast"] / 1000 - 0.75) <= 0.06, weighted
        quickest = members("quickest", 200)
        assert quickest == Counter({"fast": 200})  # both on the CPU: the cheaper one, always
        entry = client.get("/v2/models/quickest/stats").json()["model_stats"][0]
    stats = entry["ortserve"]["group"]
    assert stats["policy"] == "least_latency"
    assert stats["members"]["fast"]["chosen"] == 200 and stats["members"]["slow"]["chosen"] == 0
    assert 0 < stats["members"]["fast"]["request_cost_ms"] < stats["members"]["slow"]["request_cost_ms"]
    assert stats["members"]["fast"]["latency_ms"] > 0
    # Triton's entry for the group: its members' figures summed, so perf_analyzer can read it
    assert entry["name"] == "quickest" and entry["version"] == "1"
    assert entry["inference_stats"]["success"]["count"] >= 200
    samples = metric_samples(server)
    assert samples[("ortserve_group_requests_total", frozenset({("model", "weighted"), ("member", "slow")}))] == \
        weighted["slow"]


def test_an_unavailable_member_is_skipped_and_then_named(server: RunningServer, answers) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/v2/repository/models/spare/unload").status_code == 200
        served = Counter(_member(np.array(_v2(client, "pair").json()["outputs"][0]["data"]), answers)
                         for _ in range(20))
        assert served == Counter({"fast": 20})
        assert client.post("/v2/repository/models/fast/unload").status_code == 200
        refused = _v2(client, "pair")
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert "fast: model 'fast' is not in the repository" not in error  # each member's own reason ...
        assert "fast: not in the repository" in error and "spare: not in the repository" in error  # ... named
        assert client.get("/v2/models/pair/ready").status_code == 503
        for member in ("fast", "spare"):
            assert client.post(f"/v2/repository/models/{member}/load").status_code == 200
        assert _v2(client, "pair").status_code == 200


def test_members_must_share_one_contract(server: RunningServer, repo: Path) -> None:
    save(multi_io(), repo, "other")
    assert httpx.post(f"{server.url}/v2/repository/models/other/load").status_code == 200
    (repo / "mixed").mkdir()
    write_config(repo, "mixed", {"group": {"members": ["fast", "other"]}})
    response = httpx.post(f"{server.url}/v2/repository/models/mixed/load")
    assert response.status_code == 400
    assert "'fast' and 'other' differ in their inputs or outputs" in response.json()["error"]
    write_config(repo, "mixed", {"group": {"members": ["fast", "ghost"]}})
    response = httpx.post(f"{server.url}/v2/repository/models/mixed/load")
    assert response.status_code == 400 and "'ghost', which is not a model" in response.json()["error"]
    write_config(repo, "mixed", {"group": {"members": ["fast"]}, "max_batch_size": 4})
    response = httpx.post(f"{server.url}/v2/repository/models/mixed/load")
    assert response.status_code == 400 and "max_batch_size belong to its members" in response.json()["error"]
