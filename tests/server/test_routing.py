"""Traffic split with routing keys, shadow traffic with live agreement, and the response cache."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from ortserve.bench.server import RunningServer, metric_samples, start_server
from ortserve.examples.models import mlp, multi_io, save
from ortserve.protos.tensorflow_serving.apis import prediction_service_pb2_grpc
from tests.conftest import write_config
from tests.tf_predict import predict_request

ROW = [0.1] * 784


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("routing")
    for version in (1, 2):
        save(mlp(seed=version), repo, "split", version)
    write_config(repo, "split", {"version_policy": "all", "labels": {"stable": 1, "canary": 2},
                                 "routing": {"split": {"stable": 90, "canary": 10}}})
    save(mlp(seed=1), repo, "shadow_same", 1)
    save(mlp(seed=1), repo, "shadow_same", 2)
    write_config(repo, "shadow_same", {"version_policy": {"specific": [1, 2]}, "labels": {"stable": 1},
                                       "routing": {"split": {"stable": 1}, "shadow": {"target": 2}}})
    save(mlp(seed=1), repo, "shadow_other", 1)
    save(mlp(seed=5), repo, "shadow_other", 2)
    write_config(repo, "shadow_other", {"version_policy": "all", "routing": {"split": {1: 1},
                                                                             "shadow": {"target": "2"}}})
    save(mlp(seed=1), repo, "shadow_broken", 1)
    save(multi_io(), repo, "shadow_broken", 2)  # another contract: every copy fails on the shadow
    write_config(repo, "shadow_broken", {"version_policy": "all", "routing": {"split": {"1": 1},
                                                                              "shadow": {"target": 2}}})
    for version in (1, 2):
        save(mlp(seed=version), repo, "cached", version)
    write_config(repo, "cached", {"version_policy": "all", "response_cache": {"max_bytes": 100}})
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo, repo / ".server.log", "--model-control", "explicit") as running:
        yield running


def _infer(client: httpx.Client, model: str, row: list[float] = ROW, headers: dict[str, str] | None = None,
           version: str = "") -> dict:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    response = client.post(path, headers=headers, json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, len(row)], "data": row}]})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_split_follows_its_weights(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        counts = Counter(_infer(client, "split")["model_version"] for _ in range(10_000))
    assert abs(counts["2"] / 10_000 - 0.10) <= 0.02, counts
    assert set(counts) == {"1", "2"}


def test_named_versions_and_labels_bypass_the_split(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert {_infer(client, "split", version="2")["model_version"] for _ in range(50)} == {"2"}
        labelled = [client.post("/v1/models/split/labels/stable:predict", json={"instances": [ROW]})
                    for _ in range(50)]
    assert all(r.status_code == 200 for r in labelled)
    reference = ort.InferenceSession(str(server.log_path.parent / "split" / "1" / "model.onnx"))
    (expected,) = reference.run(None, {"input": np.array([ROW], dtype=np.float32)})
    for response in labelled:
        np.testing.assert_allclose(response.json()["predictions"][0], expected[0], rtol=1e-5, atol=1e-6)


def test_a_routing_key_always_reaches_the_same_version(server: RunningServer) -> None:
    chosen: dict[str, set[str]] = {}
    with httpx.Client(base_url=server.url) as client:
        for key in (f"user-{i}" for i in range(300)):
            for _ in range(3):
                answer = _infer(client, "split", headers={"X-Routing-Key": key})
                chosen.setdefault(key, set()).add(answer["model_version"])
    assert all(len(versions) == 1 for versions in chosen.values())
    canary = sum(versions == {"2"} for versions in chosen.values())
    assert 10 <= canary <= 60, canary  # keys spread by the weights too: about 30 of 300

    # the same key over TF Serving gRPC (metadata) lands on the same version as over REST
    request = predict_request("split", np.array([ROW], dtype=np.float32))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for key in list(chosen)[:40]:
            response = predict.Predict(request, metadata=(("x-routing-key", key),))
            assert {str(response.model_spec.version.value)} == chosen[key]


def _shadow_stats(server: RunningServer, model: str) -> dict:
    stats = httpx.get(f"{server.url}/v2/models/{model}/versions/1/stats").json()["model_stats"][0]
    return stats["ortserve"]["shadow"]


def _wait_compared(server: RunningServer, model: str, at_least: int) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shadow = _shadow_stats(server, model)
        if shadow["compared"] + shadow["failed"] >= at_least:
            return shadow
        time.sleep(0.05)
    raise AssertionError(f"the shadow compared too few copies: {shadow}")


def test_shadow_copies_are_compared_never_returned(server: RunningServer, repo: Path) -> None:
    reference = ort.InferenceSession(str(repo / "shadow_other" / "1" / "model.onnx"))
    rng = np.random.default_rng(4)
    with httpx.Client(base_url=server.url) as client:
        for model in ("shadow_same", "shadow_other"):
            for _ in range(40):
                row = rng.standard_normal(784).astype(np.float32)
                answer = _infer(client, model, row.tolist())
                assert answer["model_version"] == "1"
                if model == "shadow_other":
                    (expected,) = reference.run(None, {"input": row[None]})
                    np.testing.assert_allclose(answer["outputs"][0]["data"], expected[0], rtol=1e-5, atol=1e-5)
                time.sleep(0.005)  # idle cores for the shadow: copies are dropped only under load
    same = _wait_compared(server, "shadow_same", 30)["outputs"]["logits"]
    assert same["top1_agreement"] == 1.0 and same["mean_cosine"] == pytest.approx(1.0)
    assert same["max_abs_error"] == pytest.approx(0.0, abs=1e-5)
    other = _wait_compared(server, "shadow_other", 30)
    assert other["target_version"] == 2 and other["offered"] == 40
    assert other["compared"] + other["dropped"] + other["failed"] <= 40
    logits = other["outputs"]["logits"]
    assert logits["rows"] == other["compared"]
    assert logits["top1_agreement"] < 0.6 and logits["mean_cosine"] < 0.9 and logits["max_abs_error"] > 0.1

    samples = metric_samples(server)
    labels = frozenset({("model", "shadow_other"), ("version", "2"), ("output", "logits")})
    assert samples[("ortserve_shadow_rows_total", labels)] == logits["rows"]
    assert samples[("ortserve_shadow_top1_agreed_rows_total", labels)] == round(
        logits["top1_agreement"] * logits["rows"])


def test_a_failing_shadow_never_reaches_the_caller(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            assert _infer(client, "shadow_broken")["model_version"] == "1"
            time.sleep(0.005)
    shadow = _wait_compared(server, "shadow_broken", 10)
    assert shadow["failed"] >= 10 and shadow["compared"] == 0


def _binary_infer(client: httpclient.InferenceServerClient, row: np.ndarray, version: str = "1",
                  outputs: list[str] | None = None) -> np.ndarray:
    tensor = httpclient.InferInput("input", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row, binary_data=True)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs] if outputs else None
    return client.infer("cached", [tensor], model_version=version, outputs=wanted).as_numpy("logits")


def _cache_counts(server: RunningServer, version: str) -> dict:
    stats = httpx.get(f"{server.url}/v2/models/cached/versions/{version}/stats").json()["model_stats"][0]
    return stats["ortserve"]["response_cache"]


def test_the_cache_answers_bitwise_what_was_computed(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.host_port)
    rng = np.random.default_rng(9)
    first, second, third = (rng.standard_normal((1, 784)).astype(np.float32) for _ in range(3))
    computed = _binary_infer(client, first)
    assert _cache_counts(server, "1")["misses"] == 1
    cached = _binary_infer(client, first)
    assert cached.tobytes() == computed.tobytes()
    assert _cache_counts(server, "1")["hits"] == 1
    # asking for the outputs by name is another request; so is the same input to another version
    _binary_infer(client, first, outputs=["logits"])
    _binary_infer(client, first, version="2")
    assert _cache_counts(server, "1")["misses"] == 2 and _cache_counts(server, "2")["misses"] == 1
    # 100 bytes hold two answers of 40: a third pushes out the least recently used (the named-output one)
    _binary_infer(client, first)  # a hit: the plain request becomes the most recently used
    _binary_infer(client, second)
    counts = _cache_counts(server, "1")
    assert counts["evictions"] == 1 and counts["entries"] == 2 and counts["bytes"] == 80
    _binary_infer(client, first)
    assert _cache_counts(server, "1")["hits"] == 3
    _binary_infer(client, third)
    samples = metric_samples(server)
    labels = frozenset({("model", "cached"), ("version", "1")})
    assert samples[("ortserve_cache_hits_total", labels)] == 3
    assert samples[("ortserve_cache_misses_total", labels)] == 4
    triton = httpx.get(f"{server.url}/v2/models/cached/versions/1/stats").json()["model_stats"][0]
    assert triton["inference_stats"]["cache_hit"]["count"] == 3


def test_a_split_naming_an_unknown_label_is_refused(server: RunningServer, repo: Path) -> None:
    save(mlp(), repo, "bad_split")
    write_config(repo, "bad_split", {"routing": {"split": {1: 50, "canary": 50}}})
    response = httpx.post(f"{server.url}/v2/repository/models/bad_split/load")
    assert response.status_code == 400
    assert "'routing.split.canary' names 'canary': no label" in response.json()["error"]
