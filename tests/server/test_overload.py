"""Admission through the real server and the official clients: full queues answer 503 with Retry-After and
UNAVAILABLE, deadlines (gRPC's and V2's `timeout` parameter) are honoured, and a client that disconnects takes
its queued request with it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from ortserve.bench.server import RunningServer, start_server
from ortserve.bench.server import metric_samples as samples
from ortserve.examples.models import dense_stack, mlp, save
from ortserve.protos.tensorflow_serving.apis import prediction_service_pb2_grpc
from tests.conftest import write_config
from tests.tf_predict import predict_request

WIDTH = 1024


@pytest.fixture(scope="module")
def overload_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("overload")
    save(dense_stack(layers=256, width=WIDTH), repo, "slow")  # several ms a row
    write_config(repo, "slow", {"max_batch_size": 1, "queue": {"max_rows": 2}})
    save(dense_stack(layers=512, width=WIDTH), repo, "slow_deadlines")  # over 10 ms a row
    # a bound the backlogs below never reach: these tests are about deadlines, not the queue's bound
    write_config(repo, "slow_deadlines", {"max_batch_size": 1, "queue": {"max_rows": 1000}})
    save(mlp(), repo, "waiting")  # every request waits 300 ms for company
    write_config(repo, "waiting", {"max_batch_size": 64, "max_queue_delay_us": 300_000})
    with start_server(repo, tmp_path_factory.mktemp("logs") / "server.log") as running:
        yield running


def _row() -> np.ndarray:
    return np.full((1, WIDTH), 0.5, np.float32)


def _v2_json(row: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(row.shape), "datatype": "FP32", "data": row.ravel().tolist()}]}


def _stats(server: RunningServer, model: str) -> dict:
    return httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]


def test_a_full_queue_answers_503_with_retry_after_over_rest(overload_server: RunningServer) -> None:
    body = _v2_json(_row())
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{overload_server.url}/v2/models/slow/infer", json=body,
                                                     timeout=60), range(16)))
    codes = [answer.status_code for answer in answers]
    assert 200 in codes and 503 in codes, codes
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert "overloaded" in answer.json()["error"] and "queue" in answer.json()["error"]
        else:
            assert answer.status_code == 200
    refused = samples(overload_server)[("ortserve_refused_requests_total",
                                        frozenset({("model", "slow"), ("version", "1"), ("reason", "queue_full")}))]
    assert refused >= codes.count(503)


def test_a_full_queue_answers_unavailable_over_both_grpc_apis(overload_server: RunningServer) -> None:
    address = f"127.0.0.1:{overload_server.grpc_port}"
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [stub.Predict.future(predict_request("slow", _row()), timeout=60) for _ in range(16)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
                assert error.code() == grpc.StatusCode.UNAVAILABLE and "overloaded" in error.details()
        assert grpc.StatusCode.OK in codes and grpc.StatusCode.UNAVAILABLE in codes, codes
    client = triton_grpc.InferenceServerClient(address)
    tensor = triton_grpc.InferInput("input", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(_row())
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda _: _v2_grpc_outcome(client, tensor), range(16)))
    assert "OK" in outcomes and "StatusCode.UNAVAILABLE" in outcomes, outcomes


def _v2_grpc_outcome(client: triton_grpc.InferenceServerClient, tensor: triton_grpc.InferInput) -> str:
    try:
        client.infer("slow", [tensor], client_timeout=60)
    except InferenceServerException as error:
        assert "overloaded" in error.message()
        return str(error.status())
    return "OK"


def _backlog(server: RunningServer, pool: ThreadPoolExecutor, count: int) -> list:
    """`count` requests queued on slow_deadlines, and a wait until the server holds them."""
    body = _v2_json(_row())
    futures = [pool.submit(httpx.post, f"{server.url}/v2/models/slow_deadlines/infer", json=body, timeout=60)
               for _ in range(count)]
    deadline = time.monotonic() + 30
    while _stats(server, "slow_deadlines")["ortserve"]["queue"]["rows"] < count // 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return futures


def test_a_grpc_deadline_that_cannot_be_met_is_refused_at_once_and_never_run(overload_server: RunningServer) -> None:
    before = _stats(overload_server, "slow_deadlines")["execution_count"]
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{overload_server.grpc_port}")
    tensor = triton_grpc.InferInput("input", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(_row())
    with ThreadPoolExecutor(24) as pool:
        backlog = _backlog(overload_server, pool, 24)
        started = time.perf_counter()
        with pytest.raises(InferenceServerException) as refused:
            client.infer("slow_deadlines", [tensor], client_timeout=0.1)  # 12 rows queued: over 120 ms
        took = time.perf_counter() - started
        assert all(future.result().status_code == 200 for future in backlog)
    assert refused.value.status() == "StatusCode.UNAVAILABLE" and "deadline" in refused.value.message()
    assert took < 0.1
    assert _stats(overload_server, "slow_deadlines")["execution_count"] - before == 24


def test_the_v2_timeout_parameter_is_a_deadline(overload_server: RunningServer) -> None:
    client = triton_http.InferenceServerClient(overload_server.host_port)
    tensor = triton_http.InferInput("input", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(_row())
    assert client.infer("slow_deadlines", [tensor], timeout=30_000_000).as_numpy("output").shape == (1, WIDTH)
    with ThreadPoolExecutor(24) as pool:
        backlog = _backlog(overload_server, pool, 24)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("slow_deadlines", [tensor], timeout=20_000)  # microseconds, as Triton's
        assert all(future.result().status_code == 200 for future in backlog)
    assert refused.value.status() == "503" and "deadline" in refused.value.message()
    bad = httpx.post(f"{overload_server.url}/v2/models/slow_deadlines/infer",
                     json={**_v2_json(_row()), "parameters": {"timeout": "soon"}})
    assert bad.status_code == 400 and "timeout" in bad.json()["error"]


def test_an_http_client_that_disconnects_takes_its_queued_request_with_it(overload_server: RunningServer) -> None:
    before = _stats(overload_server, "waiting")
    body = httpx.Request("POST", f"{overload_server.url}/v2/models/waiting/infer",
                         json=_v2_json(np.zeros((1, 784), np.float32)))
    head = (f"POST {body.url.raw_path.decode()} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body.read())}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", overload_server.rest_port)) as connection:
        connection.sendall(head + body.read())
        deadline = time.monotonic() + 10
        while _stats(overload_server, "waiting")["ortserve"]["queue"]["requests"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    time.sleep(0.6)  # past the 300 ms the batch would have waited
    after = _stats(overload_server, "waiting")
    assert after["execution_count"] == before["execution_count"]
    assert after["ortserve"]["dropped"].get("cancelled", 0) == before["ortserve"]["dropped"].get("cancelled", 0) + 1
    assert after["ortserve"]["queue"]["requests"] == 0
