"""Rollouts under traffic: the repository is polled, every change loads beside what serves, and no call fails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from ortserve.bench.server import RunningServer, start_server
from ortserve.examples.models import mlp, save
from ortserve.protos.tensorflow_serving.apis import prediction_service_pb2_grpc
from tests.conftest import write_config
from tests.tf_predict import predict_request

POLL_S = 1.0
CLIENTS_PER_API = 8
ROW = np.random.default_rng(3).standard_normal((1, 784)).astype(np.float32)


@dataclass
class Traffic:
    """Clients calling the model without pause, each call's answering version or error recorded."""

    answered: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latest: dict[str, int] = field(default_factory=dict)  # client -> the version that answered its last call
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, client: str, version: int | None, failure: str = "") -> None:
        with self.lock:
            if version is None:
                self.failures.append(f"{client}: {failure}")
            else:
                self.answered[version] += 1
                self.latest[client] = version


def _rest_client(server: RunningServer, model: str, name: str, traffic: Traffic) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW.ravel().tolist()}]}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while not traffic.stop.is_set():
            response = client.post(f"/v2/models/{model}/infer", json=body)
            if response.status_code == 200:
                traffic.record(name, int(response.json()["model_version"]))
            else:
                traffic.record(name, None, f"{response.status_code} {response.text}")


def _grpc_client(server: RunningServer, model: str, name: str, traffic: Traffic) -> None:
    request = predict_request(model, ROW)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not traffic.stop.is_set():
            try:
                response = predict.Predict(request, timeout=30)
            except grpc.RpcError as exc:
                traffic.record(name, None, f"{exc.code().name} {exc.details()}")
                continue
            traffic.record(name, response.model_spec.version.value)


@pytest.fixture
def rolled(tmp_path: Path) -> Iterator[tuple[Path, RunningServer]]:
    repo = tmp_path / "repository"
    save(mlp(seed=1), repo, "rolled", 1)
    with start_server(repo, tmp_path / "server.log", "--poll-interval", str(POLL_S)) as running:
        yield repo, running


@pytest.fixture
def traffic(rolled: tuple[Path, RunningServer]) -> Iterator[Traffic]:
    _, server = rolled
    traffic = Traffic()
    threads = [threading.Thread(target=client, args=(server, "rolled", f"{kind}{i}", traffic))
               for kind, client in (("rest", _rest_client), ("grpc", _grpc_client))
               for i in range(CLIENTS_PER_API)]
    for thread in threads:
        thread.start()
    yield traffic
    traffic.stop.set()
    for thread in threads:
        thread.join()


def _all_clients_reach(traffic: Traffic, version: int, since: float) -> float:
    """Seconds from `since` until every client's latest call was answered by `version`."""
    while time.monotonic() - since < 10 * POLL_S:
        with traffic.lock:
            reached = len(traffic.latest) == 2 * CLIENTS_PER_API and set(traffic.latest.values()) == {version}
        if reached:
            return time.monotonic() - since
        time.sleep(0.02)
    raise AssertionError(f"clients still answered by {set(traffic.latest.values())}, not version {version}")


def _step(traffic: Traffic, change: Callable[[], None], expected: int) -> float:
    started = time.monotonic()
    change()
    return _all_clients_reach(traffic, expected, started)


def _statuses(server: RunningServer, model: str) -> dict[str, str]:
    statuses = httpx.get(f"{server.url}/v1/models/{model}").json()["model_version_status"]
    return {status["version"]: status["state"] for status in statuses}


def test_a_rollout_under_traffic_fails_no_call(rolled: tuple[Path, RunningServer], traffic: Traffic) -> None:
    repo, server = rolled
    _all_clients_reach(traffic, 1, time.monotonic())

    took = _step(traffic, lambda: save(mlp(seed=2), repo, "rolled", 2), expected=2)
    assert took <= 2 * POLL_S, f"version 2 answered {took:.2f}s after it was written"
    assert _statuses(server, "rolled") == {"2": "AVAILABLE"}

    # A serving field changed: both versions load anew beside the serving one; the newest still answers.
    took = _step(traffic, lambda: write_config(repo, "rolled", {"version_policy": "all", "max_batch_size": 16}),
                 expected=2)
    assert took <= 2 * POLL_S
    _wait_for(lambda: _statuses(server, "rolled") == {"1": "AVAILABLE", "2": "AVAILABLE"})
    config = httpx.get(f"{server.url}/v2/models/rolled/config").json()
    assert config["max_batch_size"] == 16

    # Version 2 removed from disk: version 1 takes over.
    took = _step(traffic, lambda: _remove(repo / "rolled" / "2"), expected=1)
    assert took <= 2 * POLL_S
    _wait_for(lambda: _statuses(server, "rolled") == {"1": "AVAILABLE"})

    # A broken version 3: it fails, and version 1 goes on answering.
    broken = repo / "rolled" / "3"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    _wait_for(lambda: _statuses(server, "rolled").get("3") == "END")
    assert _statuses(server, "rolled")["1"] == "AVAILABLE"
    error = next(s for s in httpx.get(f"{server.url}/v1/models/rolled").json()["model_version_status"]
                 if s["version"] == "3")["status"]["error_message"]
    assert "model.onnx" in error or "protobuf" in error.lower() or "load" in error.lower(), error
    time.sleep(2 * POLL_S)
    with traffic.lock:
        assert set(traffic.latest.values()) == {1}
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.answered[1] > 0 and traffic.answered[2] > 0


def test_an_invalid_config_keeps_what_serves(rolled: tuple[Path, RunningServer], traffic: Traffic) -> None:
    repo, server = rolled
    _all_clients_reach(traffic, 1, time.monotonic())
    (repo / "rolled" / "config.yaml").write_text("max_batch_size: -3\n")
    _wait_for(lambda: "max_batch_size" in _index_reason(server, "rolled"))
    assert _statuses(server, "rolled") == {"1": "AVAILABLE"}
    (repo / "rolled" / "config.yaml").write_text("max_batch_size: 4\n")
    _wait_for(lambda: httpx.get(f"{server.url}/v2/models/rolled/config").json()["max_batch_size"] == 4)
    assert _index_reason(server, "rolled") == ""
    with traffic.lock:
        assert traffic.failures == [], traffic.failures[:5]


def test_a_version_copied_in_slowly_loads_once_complete(rolled: tuple[Path, RunningServer],
                                                        traffic: Traffic) -> None:
    """A copy that pauses mid-file: the half-written version may be tried and fail, never disturbing version 1;
    once its files are whole and still, the next poll loads it."""
    repo, _ = rolled
    _all_clients_reach(traffic, 1, time.monotonic())
    whole = mlp(seed=7).SerializeToString()
    target = repo / "rolled" / "2" / "model.onnx"
    target.parent.mkdir()
    with target.open("wb") as out:
        out.write(whole[: len(whole) // 2])
        out.flush()
        time.sleep(3 * POLL_S)
        with traffic.lock:
            assert set(traffic.latest.values()) == {1}
        started = time.monotonic()
        out.write(whole[len(whole) // 2:])
    took = _all_clients_reach(traffic, 2, started)
    assert took <= 2 * POLL_S
    with traffic.lock:
        assert traffic.failures == [], traffic.failures[:5]


def _index_reason(server: RunningServer, model: str) -> str:
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    return next(entry["reason"] for entry in index if entry["name"] == model)


def _remove(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10 * POLL_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
