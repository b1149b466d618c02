"""Scale out on Ray Serve: a model repository as a Ray Serve application.

Each replica runs ortserve's core over the whole repository (registry, versions, labels, routing, batching,
admission: the same `config.yaml` semantics as the standalone server) behind ortserve's own HTTP front end, which
Ray Serve's HTTP proxy reaches as the application's ASGI ingress: TF Serving REST, KServe V2 REST (JSON and
binary tensors), the image and text APIs, with the standalone server's paths, bodies and status codes. Ray places
the replicas across the cluster's nodes, routes requests among them, restarts a replica that dies or fails its
health check (ortserve's readiness: a replica whose models failed to load is unhealthy, with the reason), and
scales the replica count with the requests in flight.

A new model version rolls out inside each replica, as in the standalone server: every replica polls the
repository (a path all nodes see, or object storage: repository.remote) and loads the new version beside the
serving one before it unloads that one, so no request fails during the rollout. The repository API (load,
unload) is closed: through the proxy it would reach one replica only.

`ortserve serve-ray` deploys it from the command line; `application()` gives the Ray Serve application for users
who compose their own, and `run()` deploys it. This module imports Ray; the plain server never imports it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry
from ray import serve
from ray.util.metrics import Gauge

from ortserve.repository.remote import DEFAULT_CACHE, RemoteRepository, is_remote
from ortserve.runtime.gpu import GpuMonitor
from ortserve.runtime.registry import ModelRegistry
from ortserve.server.app import ServerSettings, build_http_app
from ortserve.server.control import ControlMode, ModelControl
from ortserve.server.dataplane import DataPlane
from ortserve.server.grpc_bridge import SERVICER_FUNCTIONS, CallFailed, GrpcBridge
from ortserve.server.grpc_tfserving import ModelService, PredictionService
from ortserve.server.grpc_v2 import InferenceService
from ortserve.server.http import HttpApp
from ortserve.server.metrics import Metrics

log = logging.getLogger(__name__)

APPLICATION = "ortserve"
DEFAULT_HTTP_PORT = 8000
# A replica batches what is in flight: this many requests per replica fill its batches without a long queue
# (admission refuses past its own bound, so Ray's limit only has to be above it)
TARGET_ONGOING_REQUESTS = 8
MAX_ONGOING_REQUESTS = 256
METRICS_EXPORT_S = 5.0  # how often a replica copies its statistics into Ray's metrics
CLOSED = ("the repository API is closed under Ray Serve: a call would reach one replica only; change the "
          "repository (or object storage) and every replica's poll rolls the change out")


@serve.ingress()
class OrtServeReplica:
    """One replica: the repository loaded (and polled) on the replica's event loop, served by ortserve's ASGI app."""

    async def __init__(self, repository: str, model_control: ControlMode, poll_interval_s: float, cache_dir: str,
                       drain_timeout_s: float) -> None:
        remote = RemoteRepository(repository, Path(cache_dir)) if is_remote(repository) else None
        path = Path(repository) if remote is None else remote.path
        self._registry = ModelRegistry(path, None if remote is None else functools.partial(asyncio.to_thread,
                                                                                           remote.sync))
        await self._registry.refresh()
        await self._registry.load_all()
        self._started_with = frozenset(self._registry.models)  # what the replica's health answers for
        self._watch = (asyncio.ensure_future(self._registry.watch(poll_interval_s)) if model_control == "poll"
                       else None)
        self._plane = DataPlane(self._registry, GpuMonitor.open(),
                                ModelControl(model_control, None, loopback_only=False, closed=CLOSED))
        self._settings = ServerSettings(repository=path, model_control=model_control)
        self._grpc = GrpcBridge(self._plane)
        self._drain_timeout_s = drain_timeout_s
        self._metrics = RayMetrics(Metrics(self._plane).registry, serve.get_replica_context().replica_id.unique_id)
        self._export = asyncio.ensure_future(self._metrics.run(METRICS_EXPORT_S))

    def __serve_build_asgi_app__(self) -> HttpApp:
        return build_http_app(self._plane, self._settings)

    def check_health(self) -> None:
        """Ray Serve's health check: unhealthy (with the reasons) while a model the replica started with cannot
        serve, so that Ray replaces it. A model added later that fails to load does not fail the replicas (all of
        them would, and a restart would not mend it): it is reported by the status endpoints, as standalone."""
        problems = []
        for name, model in sorted(self._registry.models.items()):
            if name not in self._started_with:
                continue
            if model.error:
                problems.append(f"model {name!r}: {model.error}")
            elif not model.is_ready():
                failed = "; ".join(f"version {v.version}: {v.error}" for v in model.versions.values() if v.error)
                problems.append(f"model {name!r} has no version that can serve{': ' + failed if failed else ''}")
        if problems:
            raise RuntimeError("; ".join(problems))

    async def __del__(self) -> None:
        """A graceful replica shutdown (scale-down, rolling update): answer what is queued, then stop."""
        self._export.cancel()
        if self._watch is not None:
            self._watch.cancel()
        refused = await self._plane.drain(self._drain_timeout_s)
        if refused:
            log.warning("%d queued requests were refused: the drain ran out of time", refused)
        self._registry.stop()


class RayMetrics:
    """A replica's Prometheus samples (the server's /metrics) copied into Ray's metrics as gauges tagged with the
    replica, so that Ray's metrics export (each node's metrics agent, scraped by Prometheus) carries every
    replica's: counters and histogram buckets keep their cumulative values."""

    def __init__(self, registry: CollectorRegistry, replica: str) -> None:
        self._registry = registry
        self._replica = replica
        self._gauges: dict[str, Gauge] = {}

    def export(self) -> None:
        for family in self._registry.collect():
            for sample in family.samples:
                gauge = self._gauges.get(sample.name)
                if gauge is None:
                    gauge = self._gauges[sample.name] = Gauge(sample.name, description=family.documentation,
                                                              tag_keys=("replica", *sorted(sample.labels)))
                gauge.set(sample.value, tags={"replica": self._replica, **sample.labels})

    async def run(self, interval_s: float) -> None:
        while True:
            self.export()
            await asyncio.sleep(interval_s)


def _rpc(name: str) -> Callable[..., Any]:
    """The replica method Ray Serve's gRPC proxy calls for the RPC `name`: the request message in, the response
    message out, a failure's status code and details set on the call's context."""

    async def method(self: OrtServeReplica, request: Message, grpc_context: Any = None) -> Message:
        metadata = grpc_context.invocation_metadata() if grpc_context is not None else ()
        try:
            return await self._grpc.call(name, request, metadata)
        except CallFailed as failed:
            if grpc_context is not None:
                grpc_context.set_code(failed.code)
                grpc_context.set_details(failed.details)
            raise

    method.__name__ = method.__qualname__ = name
    return method


RPC_NAMES = sorted({name for service in (PredictionService, ModelService, InferenceService)
                    for name in vars(service) if name[:1].isupper()})
for _name in RPC_NAMES:
    setattr(OrtServeReplica, _name, _rpc(_name))


def application(repository: str | Path, *, replicas: int = 1, autoscale: tuple[int, int] | None = None,
                num_cpus: float = 1.0, num_gpus: float = 0.0, max_replicas_per_node: int | None = None,
                model_control: ControlMode = "poll", poll_interval_s: float = 2.0,
                cache_dir: str | Path = DEFAULT_CACHE, drain_timeout_s: float = 30.0,
                autoscaling: dict[str, Any] | None = None) -> serve.Application:
    """The repository as a Ray Serve application: `replicas` replicas, or `autoscale=(min, max)` following the
    requests in flight (`autoscaling` overrides Ray Serve's autoscaling_config fields). Each replica reserves
    `num_cpus` and `num_gpus`; `max_replicas_per_node` spreads them over nodes."""
    location = str(repository) if is_remote(str(repository)) else str(Path(repository).resolve())
    options: dict[str, Any] = {
        "name": APPLICATION,
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
        "health_check_period_s": 5.0,
        "graceful_shutdown_timeout_s": drain_timeout_s + 5.0,
    }
    if autoscale is not None:
        low, high = autoscale
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
                                         "upscale_delay_s": 5.0, "downscale_delay_s": 60.0, **(autoscaling or {})}
    else:
        options["num_replicas"] = replicas
    if max_replicas_per_node is not None:
        options["max_replicas_per_node"] = max_replicas_per_node
    deployment = serve.deployment(OrtServeReplica).options(**options)
    return deployment.bind(location, model_control, poll_interval_s, str(cache_dir), drain_timeout_s)


def run(repository: str | Path, *, address: str | None = None, host: str = "127.0.0.1",
        http_port: int = DEFAULT_HTTP_PORT, grpc_port: int | None = None, proxy_location: str = "EveryNode",
        ingress: str = "proxy", **options: Any) -> None:
    """Deploy the repository on the Ray cluster at `address` (`auto`, `ray://...`; None: start a local one), with
    Ray Serve's HTTP proxy on host:http_port and, with `grpc_port`, its gRPC proxy carrying TF Serving's and KServe
    V2's services; a proxy on every node, or only the head's (`HeadOnly`: several nodes on one machine would
    otherwise share the ports); `options` as for application(). Returns once every replica is up.

    `ingress="haproxy"` puts Ray Serve's HAProxy ingress in front of replicas that take HTTP themselves (its
    direct ingress, experimental in Ray 2.60), instead of the Python proxy and router: HTTP only, and a local
    cluster started here (a running cluster must have been started with RAY_SERVE_ENABLE_HA_PROXY=1 and
    RAY_SERVE_ENABLE_DIRECT_INGRESS=1)."""
    connect(address, host, ingress)
    deploy(repository, host=host, http_port=http_port, grpc_port=grpc_port, proxy_location=proxy_location,
           ingress=ingress, **options)


def connect(address: str | None = None, host: str = "127.0.0.1", ingress: str = "proxy") -> None:
    """Join the Ray cluster at `address`, or start a local one (with the ingress chosen: see run())."""
    if ray.is_initialized():
        return
    if ingress == "haproxy":  # read by Serve's controller and replicas when they start
        os.environ.update({"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"})
    if address is None:
        ray.init(include_dashboard=False, _node_ip_address=None if host == "0.0.0.0" else host)
    else:
        ray.init(address=address)


def deploy(repository: str | Path, *, host: str = "127.0.0.1", http_port: int = DEFAULT_HTTP_PORT,
           grpc_port: int | None = None, proxy_location: str = "EveryNode", ingress: str = "proxy",
           **options: Any) -> None:
    """run()'s deployment, on the cluster connect() joined."""
    if ingress == "haproxy" and grpc_port is not None:
        raise ValueError("the HAProxy ingress carries HTTP only: leave grpc_port unset, or use ingress='proxy'")
    grpc_options = None if grpc_port is None else {"port": grpc_port,
                                                   "grpc_servicer_functions": list(SERVICER_FUNCTIONS)}
    serve.start(http_options={"host": host, "port": http_port}, grpc_options=grpc_options,
                proxy_location=proxy_location)
    try:
        serve.run(application(repository, **options), name=APPLICATION, route_prefix="/")
    except RuntimeError as exc:  # Ray Serve says that the deployment failed; its status says why
        status = serve.status().applications.get(APPLICATION)
        # each message ends with the replica's traceback, whose last line is the reason (check_health's)
        reasons = [] if status is None else [d.message.strip().splitlines()[-1]
                                             for d in status.deployments.values() if d.message.strip()]
        raise RuntimeError("; ".join([str(exc), *reasons])) from None


def shutdown() -> None:
    """Take the application down (each replica answers what it has queued first) and leave the cluster."""
    serve.shutdown()
    ray.shutdown()
    for flag in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS"):
        os.environ.pop(flag, None)
