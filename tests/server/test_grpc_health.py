"""gRPC's standard health checking protocol, through gRPC's own client (grpcio-health-checking): readiness for
the server and each service it hosts, liveness apart, NOT_FOUND for other names, List, and Watch. Readiness
during a drain, and a Watch that sees it: tests/server/test_shutdown.py."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.bench.server import RunningServer
from ortserve.server.grpc_health import WATCH_POLL_S

SERVING = health_pb2.HealthCheckResponse.SERVING


def _check(server: RunningServer, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


@pytest.mark.parametrize("service", ["", "liveness", "inference.GRPCInferenceService",
                                     "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
                                     "grpc.health.v1.Health"])
def test_a_ready_server_is_serving(server: RunningServer, service: str) -> None:
    assert _check(server, service) == SERVING


def test_an_unknown_service_is_not_found_naming_it(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        _check(server, "tensorflow.serving.SessionService")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'tensorflow.serving.SessionService'" in unknown.value.details()


def test_list_answers_every_name_check_knows(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10).statuses
    assert {"", "liveness", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"} <= set(listed)
    assert all(listed[name].status == SERVING for name in listed)
    assert all(_check(server, name) == listed[name].status for name in listed)


@pytest.mark.parametrize("service", ["", "liveness", "tensorflow.serving.PredictionService"])
def test_watch_sends_the_status_at_once_and_stays_open_until_cancelled(server: RunningServer, service: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service),
                                                           timeout=30)
        assert next(stream).status == SERVING
        time.sleep(3 * WATCH_POLL_S)  # no change, so nothing more is sent
        stream.cancel()
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    assert _check(server, "") == SERVING  # the server goes on after its watcher left


def test_watch_of_an_unknown_service_is_told_so_and_kept_open(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = health_pb2.HealthCheckRequest(service="tensorflow.serving.SessionService")
        stream = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=3)
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        with pytest.raises(grpc.RpcError) as waited:
            next(stream)
    assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # not ended by the server


def test_watch_with_a_request_that_does_not_parse_is_invalid_argument(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda _: b"\xff\xff",
                                     response_deserializer=health_pb2.HealthCheckResponse.FromString)
        with pytest.raises(grpc.RpcError) as invalid:
            next(watch(None, timeout=10))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in invalid.value.details()
