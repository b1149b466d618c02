"""gRPC's standard health checking protocol (grpc.health.v1.Health), what Kubernetes' gRPC probes,
grpc_health_probe and load balancers call.

`Check` with an empty service name, or the full name of a service this server hosts, answers the server's
readiness: SERVING once the repository's first load has finished, NOT_SERVING before and from the moment a drain
starts (as `ServerReady` and `/v2/health/ready`). The service name `liveness` answers SERVING while the process
serves calls at all, for a liveness probe that must not restart a server still loading its models. Any other name
is NOT_FOUND, as the protocol asks. `List` answers every name Check knows with its status. `Watch` answers
UNIMPLEMENTED (the protocol allows it; probes use Check).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from ortserve.protos.health.health_pb2 import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthListRequest,
    HealthListResponse,
)
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import Call

LIVENESS = "liveness"


class HealthService:
    def __init__(self, plane: DataPlane, services: Iterable[str]) -> None:
        self._plane = plane
        self._readiness_names = frozenset(("", *services))

    def Check(self, request: HealthCheckRequest, call: Call) -> None:
        if request.service != LIVENESS and request.service not in self._readiness_names:
            names = ", ".join(sorted(name for name in self._readiness_names if name))
            call.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r} here; checks take '' (the "
                                                  f"server's readiness), {LIVENESS!r} or one of {names}")
            return
        call.reply(self._status(request.service))

    def List(self, request: HealthListRequest, call: Call) -> None:
        names = (*self._readiness_names, LIVENESS)
        call.reply(HealthListResponse(statuses={name: self._status(name) for name in names}))

    def _status(self, service: str) -> HealthCheckResponse:
        healthy = self._plane.live if service == LIVENESS else self._plane.ready
        return HealthCheckResponse(status=HealthCheckResponse.SERVING if healthy else HealthCheckResponse.NOT_SERVING)
