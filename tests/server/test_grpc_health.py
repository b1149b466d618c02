"""gRPC's standard health checking protocol, through gRPC's own client (grpcio-health-checking): readiness for
the server and each service it hosts, liveness apart, NOT_FOUND for other names, List, Watch unimplemented.
Readiness during a drain: tests/server/test_shutdown.py."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ortserve.bench.server import RunningServer

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


def test_watch_is_unimplemented(server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as unimplemented:
            next(stream)
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
