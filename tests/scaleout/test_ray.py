"""ortserve on Ray Serve, on a local Ray cluster of two nodes: two replicas placed on different nodes answer
tritonclient (HTTP JSON and binary) and TF Serving REST and gRPC as in-process ONNX Runtime does, and bad input
as the standalone server does; a replica killed under load is replaced while the other answers; a new version
rolls through the replicas with no failed request; autoscaling goes from 1 to 2 replicas under load and back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from ortserve.bench.server import free_port
from ortserve.examples.models import mlp, save
from ortserve.protos.tensorflow_serving.apis import prediction_service_pb2_grpc
from tests.conftest import write_config
from tests.tf_predict import predict_request

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from ray._private.state import actors  # noqa: E402  (the GCS's actor table; the state API needs the dashboard)
from ray.cluster_utils import Cluster  # noqa: E402

import ortserve.ray as ortserve_ray  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REPLICA_CLASS = "ServeReplica:ortserve:ortserve"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, int]]:
    """Two Ray nodes on this machine, one CPU each; Serve's proxies (the head node's) on loopback."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    ray.init(address=nodes.address)
    ports = {"http": free_port(), "grpc": free_port()}
    try:
        yield ports
    finally:
        serve.shutdown()
        ray.shutdown()
        nodes.shutdown()


def _deploy(repository: Path, ports: dict[str, int], **options: object) -> None:
    ortserve_ray.run(repository, http_port=ports["http"], grpc_port=ports["grpc"], proxy_location="HeadOnly",
                     poll_interval_s=0.5, **options)


def _replicas() -> list[dict]:
    """The live replica actors: their ActorID, Name, and Address (NodeID)."""
    return [actor for actor in actors(actor_state_name="ALIVE").values() if actor["ActorClassName"] == REPLICA_CLASS]


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.25)


def _v2_body(row: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(row.shape), "data": row.ravel().tolist()}]}


class Traffic:
    """Clients posting V2 JSON through the proxy without pause; failures (dated by when their request was sent)
    and answering versions recorded."""

    def __init__(self, url: str, clients: int) -> None:
        self.failures: list[tuple[float, str]] = []
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._url = url
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        body = _v2_body(np.ones((1, 784), np.float32))
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                sent = time.monotonic()  # failures are dated by when the request was sent
                try:
                    response = client.post(f"{self._url}/v2/models/mlp/infer", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append((sent, repr(exc)))
                    continue
                if response.status_code == 200:
                    self.versions.append(int(response.json()["model_version"]))
                else:
                    self.failures.append((sent, f"{response.status_code} {response.text[:200]}"))


def test_two_replicas_on_two_nodes_answer_every_protocol(cluster: dict[str, int], tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    _deploy(tmp_path, cluster, replicas=2, max_replicas_per_node=1)
    assert len({actor["Address"]["NodeID"] for actor in _replicas()}) == 2, "the replicas should be on two nodes"
    batch = np.random.default_rng(5).standard_normal((3, 784)).astype(np.float32)
    (expected,) = ort.InferenceSession(str(tmp_path / "mlp" / "1" / "model.onnx")).run(None, {"input": batch})

    client = triton.InferenceServerClient(f"127.0.0.1:{cluster['http']}")
    assert client.is_server_ready() and client.get_model_metadata("mlp")["inputs"][0]["shape"] == [-1, 784]
    for binary in (False, True):
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        answer = client.infer("mlp", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_allclose(answer.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    url = f"http://127.0.0.1:{cluster['http']}"
    rows = httpx.post(f"{url}/v1/models/mlp:predict", json={"instances": batch.tolist()}, timeout=30).json()
    np.testing.assert_allclose(rows["predictions"], expected, rtol=1e-5, atol=1e-5)

    request = predict_request("mlp", batch)
    with grpc.insecure_channel(f"127.0.0.1:{cluster['grpc']}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = predict.Predict(request, timeout=30)
        logits = np.frombuffer(response.outputs["logits"].tensor_content, np.float32).reshape(expected.shape)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        request.model_spec.name = "missing"
        with pytest.raises(grpc.RpcError) as refused:
            predict.Predict(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND

    bad = httpx.post(f"{url}/v2/models/mlp/infer", json=_v2_body(batch[:, :5]), timeout=30)
    assert bad.status_code == 400
    assert bad.json() == {"error": "input 'input' has shape [3, 5], but the model expects [-1, 784] (-1: any size)"}
    assert httpx.post(f"{url}/v1/models/mlp:predict", content=b"{", timeout=30).status_code == 400
    assert httpx.get(f"{url}/v2/models/missing", timeout=30).status_code == 404


def test_a_killed_replica_is_replaced_while_the_other_answers(cluster: dict[str, int], tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    _deploy(tmp_path, cluster, replicas=2, max_replicas_per_node=1)
    _wait(lambda: len(_replicas()) == 2, 60, "two replicas")
    with Traffic(f"http://127.0.0.1:{cluster['http']}", clients=4) as traffic:
        time.sleep(1.0)
        victim = _replicas()[0]
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim["Name"], namespace="serve"), no_restart=True)
        _wait(lambda: len(_replicas()) == 2 and victim["ActorID"] not in {a["ActorID"] for a in _replicas()}, 120,
              "the killed replica was not replaced")
        answered_before = len(traffic.versions)
        time.sleep(2.0)
        assert len(traffic.versions) > answered_before, "requests stopped being answered"
    late = [failure for failure in traffic.failures if failure[0] > killed_at + 2.0]
    assert late == [], late[:3]  # at most the calls in flight on the killed replica fail, none sent after
    assert len(traffic.failures) <= 4, traffic.failures[:4]


def test_a_new_version_rolls_through_the_replicas_without_a_failed_request(cluster: dict[str, int],
                                                                          tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    _deploy(tmp_path, cluster, replicas=2, max_replicas_per_node=1)
    with Traffic(f"http://127.0.0.1:{cluster['http']}", clients=4) as traffic:
        time.sleep(1.0)
        save(mlp(seed=2), tmp_path, "mlp", 2)
        _wait(lambda: traffic.versions[-20:].count(2) == 20, 60, "version 2 never served alone")
    assert traffic.failures == [], traffic.failures[:3]
    assert set(traffic.versions) == {1, 2}


def test_autoscaling_from_one_replica_to_two_and_back(cluster: dict[str, int], tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    write_config(tmp_path, "mlp", {"max_batch_size": 8, "max_queue_delay_us": 100_000})  # requests wait 0.1 s
    _deploy(tmp_path, cluster, autoscale=(1, 2), max_replicas_per_node=1,
            autoscaling={"target_ongoing_requests": 2, "upscale_delay_s": 1.0, "downscale_delay_s": 3.0,
                         "look_back_period_s": 12.0})
    assert len(_replicas()) == 1
    with Traffic(f"http://127.0.0.1:{cluster['http']}", clients=8) as traffic:
        _wait(lambda: len(_replicas()) == 2, 90, "no second replica under load")
    assert traffic.failures == [], traffic.failures[:3]
    _wait(lambda: len(_replicas()) == 1, 120, "the second replica stayed after the load")


def test_every_replicas_metrics_reach_rays_metrics_export(cluster: dict[str, int], tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    _deploy(tmp_path, cluster, replicas=2, max_replicas_per_node=1)
    url = f"http://127.0.0.1:{cluster['http']}"
    for _ in range(20):
        assert httpx.post(f"{url}/v2/models/mlp/infer", json=_v2_body(np.ones((1, 784), np.float32)),
                          timeout=30).status_code == 200
    replicas = {actor["Name"].rsplit("#", 1)[-1] for actor in _replicas()}
    ports = {node["MetricsExportPort"] for node in ray.nodes() if node["Alive"]}

    def counted() -> dict[str, float]:
        found: dict[str, float] = {}
        for port in ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            for line in text.splitlines():
                if line.startswith("ray_ortserve_requests_total{") and 'model="mlp"' in line:
                    replica = line.split('replica="', 1)[1].split('"', 1)[0]
                    found[replica] = found.get(replica, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    _wait(lambda: set(counted()) == replicas, 60, f"not every replica's requests were exported: {counted()}")
    assert sum(counted().values()) >= 20


def test_a_replica_whose_model_cannot_load_is_unhealthy_with_the_reason(cluster: dict[str, int],
                                                                       tmp_path: Path) -> None:
    save(mlp(seed=1), tmp_path, "mlp")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError) as failed:
        _deploy(tmp_path, cluster, replicas=1)
    assert "model 'broken'" in str(failed.value) and "model.onnx" in str(failed.value)
