"""gRPC's standard health checking protocol (grpc.health.v1.Health), what Kubernetes' gRPC probes,
grpc_health_probe and load balancers call.

`Check` with an empty service name, or the full name of a service this server hosts, answers the server's
readiness: SERVING once the repository's first load has finished, NOT_SERVING before and from the moment a drain
starts (as `ServerReady` and `/v2/health/ready`). The service name `liveness` answers SERVING while the process
serves calls at all, for a liveness probe that must not restart a server still loading its models. Any other name
is NOT_FOUND, as the protocol asks. `List` answers every name Check knows with its status.

`Watch` (a server-streaming call, what Envoy and some load balancers hold open) sends the name's status at once
and again each time it changes, until the client goes or the server stops (then UNAVAILABLE, the end the
protocol names for a server shutting down). A name Check does not know is sent SERVICE_UNKNOWN and the call stays
open, as the protocol asks. Changes are found by a thread that polls the statuses every `WATCH_POLL_S` while a
Watch is open: readiness changes rarely (the first load, a drain) and has no event of its own to wait on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from ortserve.protos.health.health_pb2 import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthListRequest,
    HealthListResponse,
)
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_engine import Call, Feed

LIVENESS = "liveness"
WATCH_POLL_S = 0.1


@dataclass(eq=False, slots=True)
class _Watcher:
    feed: Feed
    service: str
    sent: HealthCheckResponse.ServingStatus.ValueType


class HealthService:
    def __init__(self, plane: DataPlane, services: Iterable[str]) -> None:
        self._plane = plane
        self._readiness_names = frozenset(("", *services))
        self._watchers: set[_Watcher] = set()
        self._watchers_lock = threading.Lock()
        self._poller: threading.Thread | None = None

    def Check(self, request: HealthCheckRequest, call: Call) -> None:
        if not self._known(request.service):
            names = ", ".join(sorted(name for name in self._readiness_names if name))
            call.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r} here; checks take '' (the "
                                                  f"server's readiness), {LIVENESS!r} or one of {names}")
            return
        call.reply(self._status(request.service))

    def List(self, request: HealthListRequest, call: Call) -> None:
        names = (*self._readiness_names, LIVENESS)
        call.reply(HealthListResponse(statuses={name: self._status(name) for name in names}))

    def Watch(self, request: HealthCheckRequest, feed: Feed) -> None:
        status = self._status(request.service).status if self._known(request.service) else \
            HealthCheckResponse.SERVICE_UNKNOWN
        watcher = _Watcher(feed, request.service, status)
        feed.send(HealthCheckResponse(status=status))
        with self._watchers_lock:
            self._watchers.add(watcher)
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="ortserve-health-watch", daemon=True)
                self._poller.start()
        feed.on_end(lambda: self._forget(watcher))

    def _forget(self, watcher: _Watcher) -> None:
        with self._watchers_lock:
            self._watchers.discard(watcher)

    def _poll(self) -> None:
        """Send each open Watch its status when it changes; end once no Watch is open."""
        while True:
            time.sleep(WATCH_POLL_S)
            with self._watchers_lock:
                if not self._watchers:
                    self._poller = None
                    return
                watchers = list(self._watchers)
            for watcher in watchers:
                if not self._known(watcher.service):
                    continue
                status = self._status(watcher.service).status
                if status != watcher.sent:
                    watcher.sent = status
                    watcher.feed.send(HealthCheckResponse(status=status))

    def _known(self, service: str) -> bool:
        return service == LIVENESS or service in self._readiness_names

    def _status(self, service: str) -> HealthCheckResponse:
        healthy = self._plane.live if service == LIVENESS else self._plane.ready
        return HealthCheckResponse(status=HealthCheckResponse.SERVING if healthy else HealthCheckResponse.NOT_SERVING)
