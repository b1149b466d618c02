"""SIGTERM with a backlog: readiness goes false (and an open health Watch is told), new calls are refused, what was
accepted is answered (or refused once the drain runs out of time), and the process exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ortserve.bench.server import RunningServer, start_server
from ortserve.bench.server import metric_samples as samples
from ortserve.examples.models import dense_stack, save
from tests.conftest import write_config

WIDTH = 1024


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("shutdown")
    save(dense_stack(layers=512, width=WIDTH), repo, "slow")  # tens of ms a row
    write_config(repo, "slow", {"max_batch_size": 1, "queue": {"max_rows": 1000}})  # every request is taken
    return repo


def _body() -> dict:
    return {"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32", "data": [0.5] * WIDTH}]}


def _grpc_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="slow")
    request.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
    request.raw_input_contents.append(np.full((1, WIDTH), 0.5, np.float32).tobytes())
    return request


def _accepted(server: RunningServer) -> int:
    """Requests the model has taken: answered, or in flight (queued or running)."""
    in_flight = samples(server)[("ortserve_in_flight_requests", frozenset({("model", "slow"), ("version", "1")}))]
    stats = httpx.get(f"{server.url}/v2/models/slow/stats").json()["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"] + in_flight)


def _backlog_then_sigterm(server: RunningServer, pool: ThreadPoolExecutor, channel: grpc.Channel,
                          rest_count: int, grpc_count: int) -> tuple[list, list]:
    rest = [pool.submit(httpx.post, f"{server.url}/v2/models/slow/infer", json=_body(), timeout=120)
            for _ in range(rest_count)]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    calls = [stub.ModelInfer.future(_grpc_request(), timeout=120) for _ in range(grpc_count)]
    deadline = time.monotonic() + 30
    while _accepted(server) < rest_count + grpc_count:  # every request accepted before the signal
        assert time.monotonic() < deadline, "the backlog never formed"
        time.sleep(0.005)
    server.process.send_signal(signal.SIGTERM)
    return rest, calls


def test_sigterm_with_a_backlog_answers_every_accepted_request_and_exits_0(slow_repository: Path,
                                                                            tmp_path: Path) -> None:
    with start_server(slow_repository, tmp_path / "server.log") as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel, ThreadPoolExecutor(16) as pool:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=120)
        watched = [next(watch).status]
        rest, calls = _backlog_then_sigterm(server, pool, channel, 12, 12)
        watched.append(next(watch).status)
        ready = httpx.get(f"{server.url}/v2/health/ready")
        readiness = health.Check(health_pb2.HealthCheckRequest(), timeout=30).status
        liveness = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=30).status
        late = httpx.post(f"{server.url}/v2/models/slow/infer", json=_body())
        with pytest.raises(grpc.RpcError) as refused:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_grpc_request(), timeout=30)
        assert ready.status_code == 503
        status = health_pb2.HealthCheckResponse
        assert (readiness, liveness) == (status.NOT_SERVING, status.SERVING)
        assert watched == [status.SERVING, status.NOT_SERVING]
        assert late.status_code == 503 and "shutting down" in late.json()["error"]
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in refused.value.details()
        assert [future.result().status_code for future in rest] == [200] * 12
        assert all(call.result().outputs[0].shape == [1, WIDTH] for call in calls)
        with pytest.raises(grpc.RpcError) as watch_ended:
            next(watch)
        assert watch_ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server is stopping" in watch_ended.value.details()
        assert server.process.wait(timeout=60) == 0, server.log()
    assert "terminate called" not in server.log() and "Traceback" not in server.log()


def test_a_drain_that_runs_out_of_time_refuses_the_rest_and_still_exits_0(slow_repository: Path,
                                                                          tmp_path: Path) -> None:
    with start_server(slow_repository, tmp_path / "server.log", "--drain-timeout", "0.05") as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel, ThreadPoolExecutor(24) as pool:
        rest, _ = _backlog_then_sigterm(server, pool, channel, 20, 0)
        answers = [future.result() for future in rest]
        assert server.process.wait(timeout=60) == 0, server.log()
    codes = [answer.status_code for answer in answers]
    assert set(codes) == {200, 503}, codes
    assert all("stopped before" in answer.json()["error"] for answer in answers if answer.status_code == 503)
    assert "queued requests were refused" in server.log()
